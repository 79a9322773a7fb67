import Foundation
import GRDB

/// The assessment schema, as ordered migrations. A shipped migration is never edited.
enum AssessmentMigrations {
  static func register(_ migrator: inout DatabaseMigrator) {
    migrator.registerMigration("assessment.1.initial") { db in
      try db.execute(
        sql: """
          CREATE TABLE asm_exams (
            number INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            code TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            school_year TEXT NOT NULL,
            term INTEGER NOT NULL CHECK (term IN (1, 2)),
            subject INTEGER NOT NULL,
            stage INTEGER NOT NULL,
            grade INTEGER NOT NULL CHECK (grade BETWEEN 1 AND 12),
            org_code TEXT NOT NULL,
            org_path TEXT NOT NULL,
            full_marks REAL NOT NULL CHECK (full_marks > 0),
            pass_fraction REAL NOT NULL,
            excellent_fraction REAL NOT NULL,
            low_fraction REAL NOT NULL,
            create_time REAL NOT NULL,
            update_time REAL NOT NULL
          );
          CREATE TABLE asm_items (
            exam INTEGER NOT NULL REFERENCES asm_exams(number),
            number INTEGER NOT NULL CHECK (number >= 1),
            max_score REAL NOT NULL CHECK (max_score > 0),
            objective INTEGER NOT NULL,
            knowledge_points TEXT NOT NULL,
            PRIMARY KEY (exam, number)
          ) WITHOUT ROWID;
          CREATE TABLE asm_students (
            sid INTEGER PRIMARY KEY,
            exam INTEGER NOT NULL REFERENCES asm_exams(number),
            student TEXT NOT NULL,
            class_code TEXT NOT NULL,
            school_code TEXT NOT NULL,
            org_path TEXT NOT NULL,
            UNIQUE (exam, student)
          );
          CREATE INDEX asm_students_scope ON asm_students(exam, org_path);
          CREATE TABLE asm_scores (
            sid INTEGER NOT NULL REFERENCES asm_students(sid),
            item INTEGER NOT NULL,
            score REAL NOT NULL CHECK (score >= 0),
            PRIMARY KEY (sid, item)
          ) WITHOUT ROWID;
          CREATE TABLE asm_quality (
            id TEXT PRIMARY KEY,
            student TEXT NOT NULL,
            school_code TEXT NOT NULL,
            org_path TEXT NOT NULL,
            school_year TEXT NOT NULL,
            term INTEGER NOT NULL CHECK (term IN (1, 2)),
            dimension INTEGER NOT NULL CHECK (dimension BETWEEN 1 AND 5),
            title TEXT NOT NULL,
            description TEXT NOT NULL,
            evidence_ref TEXT NOT NULL,
            grade INTEGER NOT NULL CHECK (grade BETWEEN 1 AND 4),
            update_time REAL NOT NULL,
            UNIQUE (student, school_year, term, dimension, title)
          );
          """)
    }
    // Each student's total, kept by the score batches that write its scores: a student's
    // report reads the exam's totals from its student rows instead of summing every score.
    migrator.registerMigration("assessment.2.student-totals") { db in
      try db.execute(
        sql: """
          ALTER TABLE asm_students ADD COLUMN total REAL NOT NULL DEFAULT 0;
          UPDATE asm_students SET total =
            (SELECT COALESCE(SUM(score), 0) FROM asm_scores sc WHERE sc.sid = asm_students.sid);
          """)
    }
    // Each student's scores packed beside its row (PackedScores), kept by the score batches:
    // a report reads an exam's scores as one row per student instead of one per score.
    migrator.registerMigration("assessment.3.student-scores") { db in
      try db.execute(sql: "ALTER TABLE asm_students ADD COLUMN scores BLOB NOT NULL DEFAULT x''")
      let students = try Int64.fetchAll(db, sql: "SELECT sid FROM asm_students")
      let scoresOf = try db.makeStatement(
        sql: "SELECT item, score FROM asm_scores WHERE sid = ? ORDER BY item")
      let keep = try db.makeStatement(sql: "UPDATE asm_students SET scores = ? WHERE sid = ?")
      for sid in students {
        let packed = PackedScores.pack(
          try Row.fetchAll(scoresOf, arguments: [sid]).map { (item: $0[0], score: $0[1]) })
        try keep.execute(arguments: [packed, sid])
      }
    }
    // Absentees: each student's attendance (SAT 1, ABSENT 2, EXEMPT 3, the proto's values)
    // and EXEMPT's reason; each exam's missing-item policy (REPORT 1, ZERO 2), ZERO for the
    // exams that existed, as they always counted a missing item.
    migrator.registerMigration("assessment.4.attendance") { db in
      try db.execute(
        sql: """
          ALTER TABLE asm_students ADD COLUMN attendance INTEGER NOT NULL DEFAULT 1
            CHECK (attendance IN (1, 2, 3));
          ALTER TABLE asm_students ADD COLUMN reason TEXT NOT NULL DEFAULT '';
          ALTER TABLE asm_exams ADD COLUMN missing_items INTEGER NOT NULL DEFAULT 2
            CHECK (missing_items IN (1, 2));
          """)
    }
    // The 良好 line (良好率, the fourth of the 四率): 0.70 of full marks, kept within the exam's
    // pass and excellent lines.
    migrator.registerMigration("assessment.5.good-fraction") { db in
      try db.execute(
        sql: """
          ALTER TABLE asm_exams ADD COLUMN good_fraction REAL NOT NULL DEFAULT 0.70;
          UPDATE asm_exams SET good_fraction = MIN(MAX(0.70, pass_fraction), excellent_fraction);
          """)
    }
    // Cut lines drawn by a score or a top share (the proto's CutLines, serialized; empty: the
    // fractions draw every line).
    migrator.registerMigration("assessment.6.cut-lines") { db in
      try db.execute(sql: "ALTER TABLE asm_exams ADD COLUMN cut_lines BLOB NOT NULL DEFAULT x''")
    }
    // Joint exam sessions (联考): the session a paper belongs to, one paper per subject.
    migrator.registerMigration("assessment.7.sessions") { db in
      try db.execute(
        sql: """
          ALTER TABLE asm_exams ADD COLUMN session_code TEXT NOT NULL DEFAULT '';
          CREATE UNIQUE INDEX asm_exams_session ON asm_exams(session_code, subject)
            WHERE session_code <> '';
          """)
    }
    // Objective items' options and answer key (comma-joined labels; '' none), and the option
    // each student chose on such an item ('' none recorded).
    migrator.registerMigration("assessment.8.options") { db in
      try db.execute(
        sql: """
          ALTER TABLE asm_items ADD COLUMN options TEXT NOT NULL DEFAULT '';
          ALTER TABLE asm_items ADD COLUMN answer_key TEXT NOT NULL DEFAULT '';
          ALTER TABLE asm_scores ADD COLUMN choice TEXT NOT NULL DEFAULT '';
          """)
    }
    // Each exam's tallies (ExamTallies.swift), kept by the score batches: a report reads a few
    // hundred tally rows instead of every student's scores. Student rows are indexed by
    // class, school and total, so a rank in a class or school is a counted index range, and
    // the students of one total are found without a scan.
    migrator.registerMigration("assessment.9.tallies") { db in
      try db.execute(
        sql: """
          CREATE TABLE asm_tallies (
            exam INTEGER NOT NULL REFERENCES asm_exams(number),
            path TEXT NOT NULL,
            kind INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 3),
            total REAL NOT NULL,
            count INTEGER NOT NULL CHECK (count > 0),
            sums BLOB NOT NULL,
            squares BLOB NOT NULL,
            PRIMARY KEY (exam, path, kind, total)
          ) WITHOUT ROWID;
          CREATE INDEX asm_students_class_rank ON asm_students(exam, class_code, attendance, total);
          CREATE INDEX asm_students_school_rank
            ON asm_students(exam, school_code, attendance, total);
          CREATE INDEX asm_students_total ON asm_students(exam, attendance, total);
          """)
      try SQLiteAssessmentStore.rebuildTallies(db)
    }
    // A count in a class or school must use its own index: (exam, attendance, total) matched
    // as many columns and PostgreSQL, without statistics yet, scanned the exam with it. The
    // students of one total come from (exam, total), absent and exempt ones from a partial index.
    migrator.registerMigration("assessment.10.tally-indexes") { db in
      try db.execute(
        sql: """
          DROP INDEX asm_students_total;
          CREATE INDEX asm_students_level ON asm_students(exam, total);
          CREATE INDEX asm_students_marked ON asm_students(exam) WHERE attendance <> 1;
          """)
    }
    // A student's scores live in its row alone (PackedScores): the chosen options join the
    // packed scores there, and the table of one row per score goes (it was a third of an
    // import's writing and most of an exam's size).
    migrator.registerMigration("assessment.11.scores-in-students") { db in
      try db.execute(sql: "ALTER TABLE asm_students ADD COLUMN choices BLOB NOT NULL DEFAULT x''")
      let keep = try db.makeStatement(sql: "UPDATE asm_students SET choices = ? WHERE sid = ?")
      var sid: Int64? = nil
      var chosen: [(item: Int32, choice: String)] = []
      func flush() throws {
        if let sid { try keep.execute(arguments: [PackedScores.packChoices(chosen), sid]) }
        chosen = []
      }
      let rows = try Row.fetchCursor(
        db, sql: "SELECT sid, item, choice FROM asm_scores WHERE choice <> '' ORDER BY sid, item")
      while let row = try rows.next() {
        let next: Int64 = row[0]
        if next != sid {
          try flush()
          sid = next
        }
        chosen.append((row[1], row[2]))
      }
      try flush()
      try db.execute(sql: "DROP TABLE asm_scores")
    }
  }
}
