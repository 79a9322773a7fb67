import GRDB

/// The catalogue's schema, as ordered migrations. A shipped migration is never edited.
enum CatalogueMigrations {
  static func register(_ migrator: inout DatabaseMigrator) {
    migrator.registerMigration("catalogue.1.initial") { db in
      try db.execute(
        sql: """
          CREATE TABLE curriculum_nodes (
            code TEXT PRIMARY KEY,
            parent_code TEXT REFERENCES curriculum_nodes(code),
            kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 4),
            name TEXT NOT NULL,
            stage INTEGER NOT NULL CHECK (stage BETWEEN 1 AND 3),
            grade INTEGER NOT NULL CHECK (grade BETWEEN 0 AND 12),
            subject INTEGER NOT NULL CHECK (subject >= 1),
            ordinal INTEGER NOT NULL DEFAULT 0,
            edition_code TEXT NOT NULL,
            -- the chapter a chapter or section belongs to (itself for a chapter)
            chapter_code TEXT,
            updated_at REAL NOT NULL
          );
          CREATE INDEX curriculum_parent ON curriculum_nodes(parent_code, code);
          CREATE INDEX curriculum_edition ON curriculum_nodes(edition_code, code);
          CREATE INDEX curriculum_chapter ON curriculum_nodes(chapter_code);

          CREATE TABLE knowledge_points (
            code TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            stage INTEGER NOT NULL,
            subject INTEGER NOT NULL,
            chapter_code TEXT REFERENCES curriculum_nodes(code),
            updated_at REAL NOT NULL
          );
          CREATE INDEX knowledge_points_subject ON knowledge_points(subject, stage, code);

          CREATE TABLE resources (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            external_id TEXT UNIQUE,
            title TEXT NOT NULL,
            description TEXT NOT NULL,
            keywords TEXT NOT NULL,
            type INTEGER NOT NULL CHECK (type BETWEEN 1 AND 7),
            stage INTEGER NOT NULL,
            grade INTEGER NOT NULL,
            subject INTEGER NOT NULL,
            edition_code TEXT REFERENCES curriculum_nodes(code),
            chapter_code TEXT REFERENCES curriculum_nodes(code),
            -- the chapter of chapter_code (itself, or the chapter of a section)
            top_chapter_code TEXT,
            knowledge_points TEXT NOT NULL,
            author_id TEXT NOT NULL,
            author_name TEXT NOT NULL,
            owner_org_id TEXT NOT NULL,
            owner_org_code TEXT NOT NULL,
            owner_path TEXT NOT NULL,
            reach_path TEXT NOT NULL,
            sharing_scope INTEGER NOT NULL CHECK (sharing_scope BETWEEN 1 AND 4),
            licence TEXT NOT NULL,
            status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 4),
            review_comment TEXT NOT NULL DEFAULT '',
            content_size INTEGER,
            content_mime TEXT,
            content_sha256 TEXT,
            content_name TEXT,
            content_time REAL,
            views INTEGER NOT NULL DEFAULT 0,
            downloads INTEGER NOT NULL DEFAULT 0,
            favourites INTEGER NOT NULL DEFAULT 0,
            rating_count INTEGER NOT NULL DEFAULT 0,
            rating_sum INTEGER NOT NULL DEFAULT 0,
            popularity REAL NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            published_at REAL,
            deleted_at REAL
          );
          CREATE INDEX resources_subject ON resources(subject, grade, type);
          CREATE INDEX resources_stage ON resources(stage, grade);
          CREATE INDEX resources_owner ON resources(owner_path);
          CREATE INDEX resources_reach ON resources(reach_path, status);
          CREATE INDEX resources_author ON resources(author_id);
          CREATE INDEX resources_chapter ON resources(top_chapter_code);
          CREATE INDEX resources_edition ON resources(edition_code);
          CREATE INDEX resources_popularity ON resources(popularity);

          CREATE TABLE resource_knowledge_points (
            code TEXT NOT NULL REFERENCES knowledge_points(code),
            resource_seq INTEGER NOT NULL REFERENCES resources(seq),
            PRIMARY KEY (code, resource_seq)
          ) WITHOUT ROWID;
          CREATE INDEX resource_knowledge_points_resource
            ON resource_knowledge_points(resource_seq);

          -- title, keywords and description of live resources; rowid = resources.seq
          CREATE VIRTUAL TABLE resources_fts USING fts5(
            title, keywords, description, tokenize = 'trigram');

          CREATE TABLE transitions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            resource_seq INTEGER NOT NULL REFERENCES resources(seq),
            action INTEGER NOT NULL,
            from_status INTEGER NOT NULL,
            to_status INTEGER NOT NULL,
            actor_id TEXT NOT NULL,
            actor_name TEXT NOT NULL,
            comment TEXT NOT NULL,
            time REAL NOT NULL
          );
          CREATE INDEX transitions_resource ON transitions(resource_seq, seq);

          CREATE TABLE usage_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            resource_seq INTEGER NOT NULL REFERENCES resources(seq),
            kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 5),
            user_id TEXT NOT NULL,
            user_path TEXT NOT NULL,
            stars INTEGER NOT NULL DEFAULT 0,
            time REAL NOT NULL
          );
          CREATE INDEX usage_events_time ON usage_events(time);
          CREATE INDEX usage_events_path ON usage_events(user_path, time);

          CREATE TABLE favourites (
            resource_seq INTEGER NOT NULL REFERENCES resources(seq),
            user_id TEXT NOT NULL,
            time REAL NOT NULL,
            PRIMARY KEY (resource_seq, user_id)
          ) WITHOUT ROWID;

          CREATE TABLE ratings (
            resource_seq INTEGER NOT NULL REFERENCES resources(seq),
            user_id TEXT NOT NULL,
            stars INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5),
            time REAL NOT NULL,
            PRIMARY KEY (resource_seq, user_id)
          ) WITHOUT ROWID;
          """)
    }

    migrator.registerMigration("catalogue.2.short-word-index") { db in
      // One- and two-character words (common in Chinese) cannot use the trigram index; this
      // index holds every character as its own token, so they become FTS phrase queries.
      try db.execute(
        sql: """
          CREATE VIRTUAL TABLE resources_chars USING fts5(
            text, tokenize = 'unicode61 remove_diacritics 0');
          """)
      let rows = try Row.fetchAll(
        db, sql: "SELECT seq, title, keywords, description FROM resources WHERE deleted_at IS NULL")
      for row in rows {
        try db.execute(
          sql: "INSERT INTO resources_chars (rowid, text) VALUES (?, ?)",
          arguments: [
            row["seq"] as Int64,
            SearchQuery.characterTokens(
              [row["title"], row["keywords"], row["description"]].joined(separator: "\n")),
          ])
      }
    }

    migrator.registerMigration("catalogue.3.search-index") { db in
      // Search's own inverted index (SearchIndex), replacing the FTS5 trigram and character
      // indexes; plain tables so that any SQL store keeps it the same way.
      try db.execute(
        sql: """
          DROP TABLE resources_fts;
          DROP TABLE resources_chars;
          CREATE TABLE search_documents (
            resource_seq INTEGER PRIMARY KEY REFERENCES resources(seq),
            title_len INTEGER NOT NULL,
            keywords_len INTEGER NOT NULL,
            description_len INTEGER NOT NULL
          );
          CREATE TABLE search_postings (
            token TEXT NOT NULL,
            resource_seq INTEGER NOT NULL REFERENCES resources(seq),
            title_pos TEXT NOT NULL,
            keywords_pos TEXT NOT NULL,
            description_pos TEXT NOT NULL,
            PRIMARY KEY (token, resource_seq)
          ) WITHOUT ROWID;
          CREATE INDEX search_postings_resource ON search_postings(resource_seq);
          CREATE TABLE search_stats (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            documents INTEGER NOT NULL,
            title_len INTEGER NOT NULL,
            keywords_len INTEGER NOT NULL,
            description_len INTEGER NOT NULL
          );
          INSERT INTO search_stats (id, documents, title_len, keywords_len, description_len)
          VALUES (1, 0, 0, 0, 0);
          """)
      try SQLiteCatalogueStore.rebuildSearchIndex(db)
    }
    migrator.registerMigration("catalogue.4.search-counts") { db in
      // Postings hold packed counts and lengths (all a search reads for every match); the
      // positions move to a table in document order, read for the few best candidates.
      try db.execute(
        sql: """
          DROP TABLE search_postings;
          CREATE TABLE search_postings (
            token TEXT NOT NULL,
            resource_seq INTEGER NOT NULL REFERENCES resources(seq),
            counts INTEGER NOT NULL,
            lengths INTEGER NOT NULL,
            PRIMARY KEY (token, resource_seq)
          ) WITHOUT ROWID;
          CREATE TABLE search_positions (
            resource_seq INTEGER NOT NULL REFERENCES resources(seq),
            token TEXT NOT NULL,
            title_pos TEXT NOT NULL,
            keywords_pos TEXT NOT NULL,
            description_pos TEXT NOT NULL,
            PRIMARY KEY (resource_seq, token)
          ) WITHOUT ROWID;
          DELETE FROM search_documents;
          UPDATE search_stats SET documents = 0, title_len = 0, keywords_len = 0,
            description_len = 0;
          """)
      try SQLiteCatalogueStore.rebuildSearchIndex(db)
    }
    migrator.registerMigration("catalogue.5.visible-index") { db in
      // Searches without words count and rank every visible resource: this index covers
      // what they read of published resources (SQLiteCatalogueStore.visibleArms).
      try db.execute(
        sql: """
          CREATE INDEX resources_visible ON resources
            (status, reach_path, type, subject, grade, stage, popularity, deleted_at)
          """)
    }
    migrator.registerMigration("catalogue.6.search-positions") { db in
      // A document's positions move into its search_documents row as one text
      // (SearchIndex.encodePositions): a create writes one row there instead of one per token.
      // Stores indexed by catalogue.4 are converted in SQL; a store whose index the earlier
      // migrations left empty (their rebuild waits for this one) is indexed here.
      try db.execute(
        sql: """
          ALTER TABLE search_documents ADD COLUMN positions TEXT NOT NULL DEFAULT '';
          UPDATE search_documents SET positions = coalesce((
            SELECT group_concat(
              p.token || char(9) || p.title_pos || char(9) || p.keywords_pos || char(9)
                || p.description_pos, char(10))
            FROM search_positions p WHERE p.resource_seq = search_documents.resource_seq), '');
          DROP TABLE search_positions;
          """)
      let indexed = try Int.fetchOne(db, sql: "SELECT count(*) FROM search_documents") ?? 0
      if indexed == 0 { try SQLiteCatalogueStore.rebuildSearchIndex(db) }
    }
    migrator.registerMigration("catalogue.7.stats-stripes") { db in
      // The statistics become stripes summed when read (SearchIndex.statsTotals), as on
      // PostgreSQL; the single writer here always moves the first.
      try db.execute(
        sql: """
          CREATE TABLE search_stats_striped (
            id INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND \(SearchIndex.statsStripes)),
            documents INTEGER NOT NULL,
            title_len INTEGER NOT NULL,
            keywords_len INTEGER NOT NULL,
            description_len INTEGER NOT NULL
          );
          INSERT INTO search_stats_striped
            SELECT id, documents, title_len, keywords_len, description_len FROM search_stats;
          WITH RECURSIVE n(id) AS (SELECT 2 UNION ALL SELECT id + 1 FROM n
            WHERE id < \(SearchIndex.statsStripes))
          INSERT INTO search_stats_striped SELECT id, 0, 0, 0, 0 FROM n;
          DROP TABLE search_stats;
          ALTER TABLE search_stats_striped RENAME TO search_stats;
          """)
    }
    migrator.registerMigration("catalogue.8.recent-postings") { db in
      // A create's postings go to a table in document order, a page or two per create instead
      // of a page per token all over search_postings; a merge moves them there in token order
      // once search_recent_documents lists `recentLimit` documents (SearchIndexStore.swift).
      try db.execute(
        sql: """
          CREATE TABLE search_recent (
            resource_seq INTEGER NOT NULL,
            token TEXT NOT NULL,
            counts INTEGER NOT NULL,
            lengths INTEGER NOT NULL,
            PRIMARY KEY (resource_seq, token)
          ) WITHOUT ROWID;
          CREATE TABLE search_recent_documents (resource_seq INTEGER PRIMARY KEY);
          """)
    }
    migrator.registerMigration("catalogue.9.postings-unchecked") { db in
      // Postings are the index's own rows, written and removed with their resource by the
      // store (and resources are never deleted, only marked): the foreign key made every
      // posting a merge moves look its resource up, a quarter of the merge. The table is
      // copied without it in key order (about half a second a million postings).
      try db.execute(
        sql: """
          CREATE TABLE search_postings_unchecked (
            token TEXT NOT NULL,
            resource_seq INTEGER NOT NULL,
            counts INTEGER NOT NULL,
            lengths INTEGER NOT NULL,
            PRIMARY KEY (token, resource_seq)
          ) WITHOUT ROWID;
          INSERT INTO search_postings_unchecked (token, resource_seq, counts, lengths)
          SELECT token, resource_seq, counts, lengths FROM search_postings
          ORDER BY token, resource_seq;
          DROP TABLE search_postings;
          ALTER TABLE search_postings_unchecked RENAME TO search_postings;
          """)
    }
    migrator.registerMigration("catalogue.10.recent-from-positions") { db in
      // A recent document's postings are read from its positions text until the merge writes
      // them (SearchIndexStore.swift), not kept as a hundred rows of their own a create. The
      // listed documents keep their texts, so the table goes and nothing is lost.
      try db.execute(sql: "DROP TABLE search_recent")
    }
    migrator.registerMigration("catalogue.11.search-segments") { db in
      // Merged text postings are kept as segments, a blob of postings per token and merge
      // (SearchSegments.swift); facet postings stay rows of search_postings.
      try db.execute(
        sql: """
          CREATE TABLE search_segments (
            segment INTEGER NOT NULL,
            token TEXT NOT NULL,
            postings BLOB NOT NULL,
            PRIMARY KEY (segment, token)
          ) WITHOUT ROWID;
          CREATE TABLE search_segment_levels (
            segment INTEGER PRIMARY KEY,
            level INTEGER NOT NULL
          );
          """)
      try SQLiteCatalogueStore.segmentPostings(db)
    }
  }
}
