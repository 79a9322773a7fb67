import ServiceRuntime

extension AssessmentMigrations {
  /// The assessment schema on PostgreSQL, as ordered migrations; a shipped migration is never
  /// edited. It mirrors the SQLite one: times are seconds since 1970 as double precision, codes
  /// and paths are `COLLATE "C"` (byte order, as SQLite compares them), `objective` stays an
  /// integer 0/1.
  static let postgres: [PostgresMigration] = [
    PostgresMigration(
      "assessment.1.schema",
      [
        """
        CREATE TABLE asm_exams (
          number bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          id text COLLATE "C" NOT NULL UNIQUE,
          code text COLLATE "C" NOT NULL UNIQUE,
          name text NOT NULL,
          school_year text COLLATE "C" NOT NULL,
          term integer NOT NULL CHECK (term IN (1, 2)),
          subject integer NOT NULL,
          stage integer NOT NULL,
          grade integer NOT NULL CHECK (grade BETWEEN 1 AND 12),
          org_code text COLLATE "C" NOT NULL,
          org_path text COLLATE "C" NOT NULL,
          full_marks double precision NOT NULL CHECK (full_marks > 0),
          pass_fraction double precision NOT NULL,
          excellent_fraction double precision NOT NULL,
          low_fraction double precision NOT NULL,
          create_time double precision NOT NULL,
          update_time double precision NOT NULL)
        """,
        """
        CREATE TABLE asm_items (
          exam bigint NOT NULL REFERENCES asm_exams(number),
          number integer NOT NULL CHECK (number >= 1),
          max_score double precision NOT NULL CHECK (max_score > 0),
          objective integer NOT NULL,
          knowledge_points text COLLATE "C" NOT NULL,
          PRIMARY KEY (exam, number))
        """,
        """
        CREATE TABLE asm_students (
          sid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          exam bigint NOT NULL REFERENCES asm_exams(number),
          student text COLLATE "C" NOT NULL,
          class_code text COLLATE "C" NOT NULL,
          school_code text COLLATE "C" NOT NULL,
          org_path text COLLATE "C" NOT NULL,
          UNIQUE (exam, student))
        """,
        "CREATE INDEX asm_students_scope ON asm_students(exam, org_path)",
        """
        CREATE TABLE asm_scores (
          sid bigint NOT NULL REFERENCES asm_students(sid),
          item integer NOT NULL,
          score double precision NOT NULL CHECK (score >= 0),
          PRIMARY KEY (sid, item))
        """,
        """
        CREATE TABLE asm_quality (
          id text COLLATE "C" PRIMARY KEY,
          student text COLLATE "C" NOT NULL,
          school_code text COLLATE "C" NOT NULL,
          org_path text COLLATE "C" NOT NULL,
          school_year text COLLATE "C" NOT NULL,
          term integer NOT NULL CHECK (term IN (1, 2)),
          dimension integer NOT NULL CHECK (dimension BETWEEN 1 AND 5),
          title text COLLATE "C" NOT NULL,
          description text NOT NULL,
          evidence_ref text NOT NULL,
          grade integer NOT NULL CHECK (grade BETWEEN 1 AND 4),
          update_time double precision NOT NULL,
          UNIQUE (student, school_year, term, dimension, title))
        """,
      ]),
    // Scores are written only by a score batch, with sids the same transaction's student
    // upsert returned, and students are never deleted: the per-row foreign-key check cost
    // a score import three quarters of its time (260,940 rows: 13 s against 2.8 s).
    PostgresMigration(
      "assessment.2.scores-unchecked-sid",
      ["ALTER TABLE asm_scores DROP CONSTRAINT asm_scores_sid_fkey"]),
    // Scores carry their exam, first in the key: a report reads one exam's scores as one
    // index range in student order, without joining students (nor scanning other exams).
    PostgresMigration(
      "assessment.3.scores-by-exam",
      [
        "ALTER TABLE asm_scores ADD COLUMN exam bigint",
        "UPDATE asm_scores sc SET exam = st.exam FROM asm_students st WHERE st.sid = sc.sid",
        "ALTER TABLE asm_scores ALTER COLUMN exam SET NOT NULL",
        "ALTER TABLE asm_scores DROP CONSTRAINT asm_scores_pkey",
        "ALTER TABLE asm_scores ADD PRIMARY KEY (exam, sid, item)",
      ]),
    // Each student's total, kept by the score batches that write its scores: a student's
    // report reads the exam's totals from its student rows instead of summing every score.
    PostgresMigration(
      "assessment.4.student-totals",
      [
        "ALTER TABLE asm_students ADD COLUMN total double precision NOT NULL DEFAULT 0",
        """
        UPDATE asm_students st SET total = t.total
        FROM (SELECT sid, sum(score) AS total FROM asm_scores GROUP BY sid) t
        WHERE st.sid = t.sid
        """,
      ]),
    // Each student's scores packed beside its row (PackedScores), kept by the score batches:
    // a report reads an exam's scores as one row per student instead of one per score.
    PostgresMigration(
      "assessment.5.student-scores",
      [
        "ALTER TABLE asm_students ADD COLUMN scores bytea NOT NULL DEFAULT ''::bytea",
        """
        UPDATE asm_students st SET scores = t.scores
        FROM (SELECT sid, string_agg(int4send(item) || float8send(score), ''::bytea
          ORDER BY item) AS scores FROM asm_scores GROUP BY sid) t
        WHERE st.sid = t.sid
        """,
      ]),
    // Absentees: each student's attendance (SAT 1, ABSENT 2, EXEMPT 3, the proto's values)
    // and EXEMPT's reason; each exam's missing-item policy (REPORT 1, ZERO 2), ZERO for the
    // exams that existed, as they always counted a missing item.
    PostgresMigration(
      "assessment.6.attendance",
      [
        """
        ALTER TABLE asm_students ADD COLUMN attendance integer NOT NULL DEFAULT 1
          CHECK (attendance IN (1, 2, 3))
        """,
        "ALTER TABLE asm_students ADD COLUMN reason text NOT NULL DEFAULT ''",
        """
        ALTER TABLE asm_exams ADD COLUMN missing_items integer NOT NULL DEFAULT 2
          CHECK (missing_items IN (1, 2))
        """,
      ]),
    // The 良好 line (良好率, the fourth of the 四率): 0.70 of full marks, kept within the exam's
    // pass and excellent lines.
    PostgresMigration(
      "assessment.7.good-fraction",
      [
        "ALTER TABLE asm_exams ADD COLUMN good_fraction double precision NOT NULL DEFAULT 0.70",
        """
        UPDATE asm_exams
        SET good_fraction = least(greatest(0.70, pass_fraction), excellent_fraction)
        """,
      ]),
    // Cut lines drawn by a score or a top share (the proto's CutLines, serialized; empty: the
    // fractions draw every line).
    PostgresMigration(
      "assessment.8.cut-lines",
      ["ALTER TABLE asm_exams ADD COLUMN cut_lines bytea NOT NULL DEFAULT ''::bytea"]),
    // Joint exam sessions (联考): the session a paper belongs to, one paper per subject.
    PostgresMigration(
      "assessment.9.sessions",
      [
        "ALTER TABLE asm_exams ADD COLUMN session_code text COLLATE \"C\" NOT NULL DEFAULT ''",
        """
        CREATE UNIQUE INDEX asm_exams_session ON asm_exams(session_code, subject)
          WHERE session_code <> ''
        """,
      ]),
    // Objective items' options and answer key (comma-joined labels; '' none), and the option
    // each student chose on such an item ('' none recorded).
    PostgresMigration(
      "assessment.10.options",
      [
        "ALTER TABLE asm_items ADD COLUMN options text COLLATE \"C\" NOT NULL DEFAULT ''",
        "ALTER TABLE asm_items ADD COLUMN answer_key text COLLATE \"C\" NOT NULL DEFAULT ''",
        "ALTER TABLE asm_scores ADD COLUMN choice text COLLATE \"C\" NOT NULL DEFAULT ''",
      ]),
    // Each exam's tallies (ExamTallies.swift), kept by the score batches with increments
    // (replicas importing into one exam at once add to the same rows under their row locks):
    // a report reads a few hundred tally rows instead of every student's scores. Student rows
    // are indexed by class, school and total, so a rank in a class or school is a counted
    // index range, and the students of one total are found without a scan. The statements
    // after the indexes make the tallies of the exams that existed from their student rows.
    PostgresMigration(
      "assessment.11.tallies",
      [
        """
        CREATE TABLE asm_tallies (
          exam bigint NOT NULL REFERENCES asm_exams(number),
          path text COLLATE "C" NOT NULL,
          kind integer NOT NULL CHECK (kind BETWEEN 0 AND 3),
          total double precision NOT NULL,
          count bigint NOT NULL,
          sums double precision[] NOT NULL,
          squares double precision[] NOT NULL,
          PRIMARY KEY (exam, path, kind, total))
        """,
        "CREATE INDEX asm_students_class_rank ON asm_students(exam, class_code, attendance, total)",
        """
        CREATE INDEX asm_students_school_rank ON asm_students(exam, school_code, attendance, total)
        """,
        "CREATE INDEX asm_students_total ON asm_students(exam, attendance, total)",
        // Every student in each scope from the exam's org down to its class: sat by total,
        // absent and exempt by kind, and (kind 3) sat without every item's score.
        """
        INSERT INTO asm_tallies (exam, path, kind, total, count, sums, squares)
        SELECT s.exam, s.path, s.kind, s.total, count(*), '{}', '{}'
        FROM (
          SELECT st.exam, left(st.org_path, p.pos) AS path,
            CASE st.attendance WHEN 2 THEN 1 WHEN 3 THEN 2 ELSE 0 END AS kind,
            CASE WHEN st.attendance IN (2, 3) THEN 0 ELSE st.total END AS total
          FROM asm_students st JOIN asm_exams e ON e.number = st.exam
          CROSS JOIN LATERAL (
            SELECT i AS pos FROM generate_series(length(e.org_path), length(st.org_path)) i
            WHERE substr(st.org_path, i, 1) = '/') p
          WHERE starts_with(st.org_path, e.org_path)
          UNION ALL
          SELECT st.exam, left(st.org_path, p.pos), 3, 0
          FROM asm_students st JOIN asm_exams e ON e.number = st.exam
          CROSS JOIN LATERAL (
            SELECT i AS pos FROM generate_series(length(e.org_path), length(st.org_path)) i
            WHERE substr(st.org_path, i, 1) = '/') p
          WHERE starts_with(st.org_path, e.org_path) AND st.attendance NOT IN (2, 3)
            AND octet_length(st.scores) < 12 * (SELECT count(*) FROM asm_items i
              WHERE i.exam = st.exam)) s
        GROUP BY s.exam, s.path, s.kind, s.total
        """,
        // The item sums and sums of squares per total on the exam's own path.
        """
        UPDATE asm_tallies t SET sums = a.sums, squares = a.squares
        FROM (
          SELECT x.exam, x.total, array_agg(x.s ORDER BY x.number) AS sums,
            array_agg(x.q ORDER BY x.number) AS squares
          FROM (
            SELECT st.exam, st.total, i.number, COALESCE(sum(sc.score), 0) AS s,
              COALESCE(sum(sc.score * sc.score), 0) AS q
            FROM asm_students st JOIN asm_items i ON i.exam = st.exam
            LEFT JOIN asm_scores sc ON sc.exam = st.exam AND sc.sid = st.sid
              AND sc.item = i.number
            WHERE st.attendance NOT IN (2, 3)
            GROUP BY st.exam, st.total, i.number) x
          GROUP BY x.exam, x.total) a, asm_exams e
        WHERE t.exam = a.exam AND t.total = a.total AND t.kind = 0 AND e.number = t.exam
          AND t.path = e.org_path
        """,
      ]),
    // A count in a class or school must use its own index: (exam, attendance, total) matched
    // as many columns and, without statistics yet, the planner scanned the exam with it. The
    // students of one total come from (exam, total), absent and exempt ones from a partial index.
    PostgresMigration(
      "assessment.12.tally-indexes",
      [
        "DROP INDEX asm_students_total",
        "CREATE INDEX asm_students_level ON asm_students(exam, total)",
        "CREATE INDEX asm_students_marked ON asm_students(exam) WHERE attendance <> 1",
      ]),
    // A student's scores live in its row alone (PackedScores): the chosen options join the
    // packed scores there, and the table of one row per score goes (it was a third of an
    // import's writing and most of an exam's size).
    PostgresMigration(
      "assessment.13.scores-in-students",
      [
        "ALTER TABLE asm_students ADD COLUMN choices bytea NOT NULL DEFAULT ''::bytea",
        """
        UPDATE asm_students st SET choices = t.choices
        FROM (SELECT sid, string_agg(int4send(item)
            || int2send(octet_length(convert_to(choice, 'UTF8'))::int2)
            || convert_to(choice, 'UTF8'), ''::bytea ORDER BY item) AS choices
          FROM asm_scores WHERE choice <> '' GROUP BY sid) t
        WHERE st.sid = t.sid
        """,
        "DROP TABLE asm_scores",
      ]),
    // A statistics report reads every tally row under its scope (a county exam: 11,530) for
    // its path, kind, total and count. With the count in the key's index, as in SQLite's
    // WITHOUT ROWID table, that is an index-only scan: no heap page is visited once the
    // table is vacuumed (PostgresUpkeep does so after an import).
    PostgresMigration(
      "assessment.14.tally-count-in-key",
      [
        """
        ALTER TABLE asm_tallies DROP CONSTRAINT asm_tallies_pkey,
          ADD PRIMARY KEY (exam, path, kind, total) INCLUDE (count)
        """
      ]),
  ]
}
