import GRDB

/// Identity's schema, as ordered migrations. A shipped migration is never edited.
enum IdentityMigrations {
  static func register(_ migrator: inout DatabaseMigrator) {
    migrator.registerMigration("identity.1.initial") { db in
      try db.execute(
        sql: """
          CREATE TABLE orgs (
            id TEXT PRIMARY KEY,
            code TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 5),
            parent_id TEXT REFERENCES orgs(id),
            path TEXT NOT NULL UNIQUE,
            school_kind INTEGER NOT NULL DEFAULT 0,
            stages TEXT NOT NULL DEFAULT '',
            managing_school_id TEXT REFERENCES orgs(id),
            grade INTEGER NOT NULL DEFAULT 0,
            school_year TEXT NOT NULL DEFAULT '',
            active INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
          );
          CREATE INDEX orgs_parent ON orgs(parent_id, code);

          CREATE TABLE users (
            id TEXT PRIMARY KEY,
            external_id TEXT NOT NULL UNIQUE,
            username TEXT NOT NULL UNIQUE COLLATE NOCASE,
            display_name TEXT NOT NULL,
            kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 5),
            org_id TEXT REFERENCES orgs(id),
            birth_year INTEGER NOT NULL DEFAULT 0,
            status INTEGER NOT NULL,
            password_hash TEXT,
            failed_logins INTEGER NOT NULL DEFAULT 0,
            locked_until REAL,
            activation_hash TEXT,
            activation_expires REAL,
            client_id TEXT UNIQUE,
            client_secret_hash TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
          );
          CREATE INDEX users_org ON users(org_id);

          CREATE TABLE guardian_links (
            parent_id TEXT NOT NULL REFERENCES users(id),
            student_id TEXT NOT NULL REFERENCES users(id),
            created_at REAL NOT NULL,
            PRIMARY KEY (parent_id, student_id)
          );
          CREATE INDEX guardian_links_student ON guardian_links(student_id);

          CREATE TABLE role_bindings (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id),
            role TEXT NOT NULL,
            org_id TEXT REFERENCES orgs(id),
            granted_by TEXT NOT NULL,
            created_at REAL NOT NULL
          );
          CREATE UNIQUE INDEX role_bindings_unique ON role_bindings(user_id, role, COALESCE(org_id, ''));
          CREATE INDEX role_bindings_org ON role_bindings(org_id);

          CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id),
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            revoked_at REAL,
            revoke_reason TEXT
          );
          CREATE INDEX sessions_user ON sessions(user_id);

          CREATE TABLE refresh_tokens (
            hash TEXT PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id),
            issued_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL
          );
          CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

          CREATE TABLE signing_keys (
            id TEXT PRIMARY KEY,
            private_key BLOB NOT NULL,
            public_key BLOB NOT NULL,
            created_at REAL NOT NULL,
            retire_at REAL,
            current INTEGER NOT NULL DEFAULT 0
          );

          CREATE TABLE audit_events (
            sequence INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            actor_id TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            org_id TEXT NOT NULL,
            org_path TEXT NOT NULL,
            detail TEXT NOT NULL
          );
          CREATE INDEX audit_events_action ON audit_events(action, sequence);
          CREATE INDEX audit_events_actor ON audit_events(actor_id, sequence);
          """)
    }
    // Every token issued for a binding at a school looks up the teaching points it manages.
    migrator.registerMigration("identity.orgs_managing_school") { db in
      try db.execute(sql: "CREATE INDEX orgs_managing_school ON orgs(managing_school_id)")
    }
    // An admin-set initial password must be changed at first login.
    migrator.registerMigration("identity.users_password_change_required") { db in
      try db.execute(
        sql: """
          ALTER TABLE users ADD COLUMN password_change_required INTEGER NOT NULL DEFAULT 0
          """)
    }
    OIDCMigrations.register(&migrator)
    TwoFactorMigrations.register(&migrator)
    OIDCGrantMigrations.register(&migrator)
    OIDCDeviceMigrations.register(&migrator)
  }
}
