import GRDB

/// The supervision schema, as ordered migrations. A shipped migration is never edited.
enum SupervisionMigrations {
  static func register(_ migrator: inout DatabaseMigrator) {
    migrator.registerMigration("supervision.1.initial") { db in
      try db.execute(
        sql: """
          CREATE TABLE sup_terms (
            id TEXT PRIMARY KEY,
            code TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            start_day INTEGER NOT NULL,
            end_day INTEGER NOT NULL,
            excluded TEXT NOT NULL DEFAULT '',
            create_time REAL NOT NULL,
            update_time REAL NOT NULL,
            CHECK (start_day <= end_day)
          );
          CREATE TABLE sup_classrooms (
            number INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            code TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            school_id TEXT NOT NULL,
            school_code TEXT NOT NULL,
            class_code TEXT NOT NULL DEFAULT '',
            org_path TEXT NOT NULL,
            equipped_day INTEGER NOT NULL,
            retired_day INTEGER,
            create_time REAL NOT NULL,
            update_time REAL NOT NULL,
            CHECK (retired_day IS NULL OR retired_day > equipped_day)
          );
          CREATE INDEX sup_classrooms_path ON sup_classrooms(org_path);
          CREATE TABLE sup_lessons (
            classroom INTEGER NOT NULL REFERENCES sup_classrooms(number),
            day INTEGER NOT NULL,
            period INTEGER NOT NULL CHECK (period BETWEEN 1 AND 20),
            week INTEGER NOT NULL,
            org_path TEXT NOT NULL,
            teacher TEXT NOT NULL,
            subject INTEGER NOT NULL,
            minutes INTEGER NOT NULL CHECK (minutes BETWEEN 1 AND 240),
            source INTEGER NOT NULL,
            PRIMARY KEY (classroom, day, period)
          ) WITHOUT ROWID;
          CREATE INDEX sup_lessons_scope_week ON sup_lessons(org_path, week, classroom, subject);
          CREATE INDEX sup_lessons_scope_day ON sup_lessons(org_path, day, teacher);
          CREATE TABLE sup_training (
            id TEXT PRIMARY KEY,
            teacher TEXT NOT NULL,
            year INTEGER NOT NULL,
            half_hours INTEGER NOT NULL CHECK (half_hours > 0),
            org_path TEXT NOT NULL,
            payload BLOB NOT NULL
          );
          CREATE INDEX sup_training_scope ON sup_training(org_path, year, teacher);
          CREATE TABLE sup_facility (
            school_code TEXT NOT NULL,
            year INTEGER NOT NULL,
            org_path TEXT NOT NULL,
            payload BLOB NOT NULL,
            PRIMARY KEY (school_code, year)
          );
          CREATE INDEX sup_facility_scope ON sup_facility(org_path, year);
          CREATE TABLE sup_inspections (
            id TEXT PRIMARY KEY,
            school_code TEXT NOT NULL,
            org_path TEXT NOT NULL,
            day INTEGER NOT NULL,
            year INTEGER NOT NULL,
            payload BLOB NOT NULL
          );
          CREATE INDEX sup_inspections_scope ON sup_inspections(org_path, year);
          CREATE INDEX sup_inspections_order ON sup_inspections(day DESC, id DESC);
          """)
    }
    // Lessons by a teacher identity did not know are held (verified = 0): stored and listed,
    // counted nowhere. The usage index covers only verified lessons and carries the source
    // (the manual share); the day index carries verified for the teacher targets.
    migrator.registerMigration("supervision.4.verified-lessons") { db in
      try db.execute(
        sql: """
          ALTER TABLE sup_lessons ADD COLUMN verified INTEGER NOT NULL DEFAULT 1;
          DROP INDEX sup_lessons_scope_week;
          CREATE INDEX sup_lessons_usage
            ON sup_lessons(org_path, week, classroom, subject, source) WHERE verified = 1;
          DROP INDEX sup_lessons_scope_day;
          CREATE INDEX sup_lessons_scope_day_verified
            ON sup_lessons(org_path, day, verified, teacher);
          """)
    }
    // A visit's natural key (Inspections.naturalKey): a re-sent visit is the same inspection.
    // Visits recorded before have a key of their own id.
    migrator.registerMigration("supervision.5.inspection-key") { db in
      try db.execute(
        sql: """
          ALTER TABLE sup_inspections ADD COLUMN natural_key TEXT NOT NULL DEFAULT '';
          UPDATE sup_inspections SET natural_key = 'id/' || id;
          CREATE UNIQUE INDEX sup_inspections_key ON sup_inspections(natural_key);
          CREATE INDEX sup_inspections_scope_day ON sup_inspections(org_path, day);
          """)
    }
    // Usage counts kept beside the lessons (UsageCountsSQL): the reports read a row per
    // classroom-week instead of every lesson, and no longer need the usage index over the
    // lessons, which each imported lesson no longer writes.
    migrator.registerMigration("supervision.6.usage-counts") { db in
      let subjects = UsageCountsSQL.subjectColumnDefinitions("INTEGER")
      try db.execute(
        sql: """
          CREATE TABLE sup_classroom_weeks (
            classroom INTEGER NOT NULL,
            week INTEGER NOT NULL,
            lessons INTEGER NOT NULL,
            manual INTEGER NOT NULL,
            \(subjects),
            PRIMARY KEY (classroom, week)
          ) WITHOUT ROWID;
          CREATE TABLE sup_teacher_weeks (
            classroom INTEGER NOT NULL,
            week INTEGER NOT NULL,
            teacher TEXT NOT NULL,
            lessons INTEGER NOT NULL,
            PRIMARY KEY (classroom, week, teacher)
          ) WITHOUT ROWID;
          DROP INDEX sup_lessons_usage;
          """)
      for sql in UsageCountsSQL.backfill(postgres: false)
        + UsageCountsSQL.sqliteTriggers(subjects: false)
      {
        try db.execute(sql: sql)
      }
    }
    // The classroom-weeks keep their distinct subjects too: a city's report read sixteen
    // columns of each classroom-week to count them.
    migrator.registerMigration("supervision.7.distinct-subjects") { db in
      try db.execute(
        sql: """
          ALTER TABLE sup_classroom_weeks ADD COLUMN subjects INTEGER NOT NULL DEFAULT 0;
          UPDATE sup_classroom_weeks SET subjects = \(UsageCountsSQL.distinctSubjects { $0 });
          DROP TRIGGER sup_lessons_count_insert;
          DROP TRIGGER sup_lessons_count_classroom_week;
          """)
      for sql in UsageCountsSQL.sqliteTriggers(subjects: true) { try db.execute(sql: sql) }
    }
    // A lesson inserted is counted by its import, per batch (InsertedUsage), instead of by a
    // trigger's two upserts per lesson; the update triggers stay.
    migrator.registerMigration("supervision.8.inserts-counted-per-batch") { db in
      try db.execute(sql: "DROP TRIGGER sup_lessons_count_insert")
    }
  }
}
