import ServiceRuntime

extension IdentityMigrations {
  /// Identity's PostgreSQL schema, as ordered migrations; a shipped migration is never edited.
  /// It mirrors the SQLite one: booleans stay integer 0/1, times are seconds since 1970 as
  /// double precision, keys and ordered text are `COLLATE "C"` (byte order, as in SQLite),
  /// and usernames are unique case-insensitively through an index on `lower(username)`
  /// (usernames are ASCII, so `lower()` under "C" folds exactly as SQLite's NOCASE).
  static let postgres: [PostgresMigration] = [
    PostgresMigration(
      "identity.1.schema",
      [
        """
        CREATE TABLE orgs (
          id text COLLATE "C" PRIMARY KEY,
          code text COLLATE "C" NOT NULL UNIQUE,
          name text NOT NULL,
          kind integer NOT NULL CHECK (kind BETWEEN 1 AND 5),
          parent_id text COLLATE "C" REFERENCES orgs(id),
          path text COLLATE "C" NOT NULL UNIQUE,
          school_kind integer NOT NULL DEFAULT 0,
          stages text NOT NULL DEFAULT '',
          managing_school_id text COLLATE "C" REFERENCES orgs(id),
          grade integer NOT NULL DEFAULT 0,
          school_year text NOT NULL DEFAULT '',
          active integer NOT NULL DEFAULT 1,
          created_at double precision NOT NULL,
          updated_at double precision NOT NULL)
        """,
        "CREATE INDEX orgs_parent ON orgs(parent_id, code)",
        "CREATE INDEX orgs_managing_school ON orgs(managing_school_id)",
        """
        CREATE TABLE users (
          id text COLLATE "C" PRIMARY KEY,
          external_id text COLLATE "C" NOT NULL UNIQUE,
          username text COLLATE "C" NOT NULL,
          display_name text NOT NULL,
          kind integer NOT NULL CHECK (kind BETWEEN 1 AND 5),
          org_id text COLLATE "C" REFERENCES orgs(id),
          birth_year integer NOT NULL DEFAULT 0,
          status integer NOT NULL,
          password_hash text,
          failed_logins integer NOT NULL DEFAULT 0,
          locked_until double precision,
          activation_hash text,
          activation_expires double precision,
          client_id text UNIQUE,
          client_secret_hash text,
          created_at double precision NOT NULL,
          updated_at double precision NOT NULL,
          password_change_required integer NOT NULL DEFAULT 0)
        """,
        "CREATE UNIQUE INDEX users_username ON users(lower(username))",
        "CREATE INDEX users_org ON users(org_id)",
        """
        CREATE TABLE guardian_links (
          parent_id text COLLATE "C" NOT NULL REFERENCES users(id),
          student_id text COLLATE "C" NOT NULL REFERENCES users(id),
          created_at double precision NOT NULL,
          PRIMARY KEY (parent_id, student_id))
        """,
        "CREATE INDEX guardian_links_student ON guardian_links(student_id)",
        """
        CREATE TABLE role_bindings (
          id text COLLATE "C" PRIMARY KEY,
          user_id text COLLATE "C" NOT NULL REFERENCES users(id),
          role text NOT NULL,
          org_id text COLLATE "C" REFERENCES orgs(id),
          granted_by text NOT NULL,
          created_at double precision NOT NULL)
        """,
        """
        CREATE UNIQUE INDEX role_bindings_unique
        ON role_bindings(user_id, role, COALESCE(org_id, ''))
        """,
        "CREATE INDEX role_bindings_org ON role_bindings(org_id)",
        """
        CREATE TABLE sessions (
          id text COLLATE "C" PRIMARY KEY,
          user_id text COLLATE "C" NOT NULL REFERENCES users(id),
          created_at double precision NOT NULL,
          expires_at double precision NOT NULL,
          revoked_at double precision,
          revoke_reason text)
        """,
        "CREATE INDEX sessions_user ON sessions(user_id)",
        // Every replica asks for the sessions revoked in the last seconds, every second.
        "CREATE INDEX sessions_revoked ON sessions(revoked_at) WHERE revoked_at IS NOT NULL",
        """
        CREATE TABLE refresh_tokens (
          hash text PRIMARY KEY,
          session_id text COLLATE "C" NOT NULL REFERENCES sessions(id),
          issued_at double precision NOT NULL,
          expires_at double precision NOT NULL,
          used_at double precision)
        """,
        "CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id)",
        """
        CREATE TABLE signing_keys (
          id text PRIMARY KEY,
          private_key bytea NOT NULL,
          public_key bytea NOT NULL,
          created_at double precision NOT NULL,
          retire_at double precision,
          current integer NOT NULL DEFAULT 0)
        """,
        // Two current keys are impossible, whichever replicas rotate at once.
        "CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys(current) WHERE current = 1",
        // The sequence is a reader's cursor: taken from the counter "audit" in commit order
        // (see PostgresTransaction.takeSequence), not from a serial column.
        """
        CREATE TABLE audit_events (
          sequence bigint PRIMARY KEY,
          time double precision NOT NULL,
          actor_id text NOT NULL,
          action text NOT NULL,
          target text NOT NULL,
          org_id text NOT NULL,
          org_path text COLLATE "C" NOT NULL,
          detail text NOT NULL)
        """,
        "CREATE INDEX audit_events_action ON audit_events(action, sequence)",
        "CREATE INDEX audit_events_actor ON audit_events(actor_id, sequence)",
      ]),
    // The user import's COPY paid for two things that give nothing here. The foreign key from
    // users.org_id ran a trigger per row (a lookup and a row lock on the org: a quarter of the
    // COPY's time), yet orgs are never deleted and every writer takes org_id from an org it
    // has just read, so no user can point at a missing org. And client_id, NULL for every
    // user but service accounts, sat in a full unique index; a partial one keeps the same
    // uniqueness (NULLs never collide) without an index entry per person.
    PostgresMigration(
      "identity.2.lean-users",
      [
        "ALTER TABLE users DROP CONSTRAINT users_org_id_fkey",
        "ALTER TABLE users DROP CONSTRAINT users_client_id_key",
        "CREATE UNIQUE INDEX users_client_id ON users(client_id) WHERE client_id IS NOT NULL",
      ]),
  ] + OIDCMigrations.postgres + TwoFactorMigrations.postgres + OIDCGrantMigrations.postgres
    + OIDCDeviceMigrations.postgres
}
