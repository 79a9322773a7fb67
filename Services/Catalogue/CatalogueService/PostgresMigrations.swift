import ServiceRuntime

extension CatalogueMigrations {
  /// The catalogue schema on PostgreSQL, as ordered migrations; a shipped migration is never
  /// edited. It mirrors the SQLite schema after catalogue.3 (search's own inverted index in
  /// plain tables): times are seconds since 1970 as double precision, codes, ids and paths are
  /// `COLLATE "C"` (byte order, as SQLite compares them and as path ranges need).
  static let postgres: [PostgresMigration] = [
    PostgresMigration(
      "catalogue.1.schema",
      [
        """
        CREATE TABLE curriculum_nodes (
          code text COLLATE "C" PRIMARY KEY,
          parent_code text COLLATE "C" REFERENCES curriculum_nodes(code),
          kind integer NOT NULL CHECK (kind BETWEEN 1 AND 4),
          name text NOT NULL,
          stage integer NOT NULL CHECK (stage BETWEEN 1 AND 3),
          grade integer NOT NULL CHECK (grade BETWEEN 0 AND 12),
          subject integer NOT NULL CHECK (subject >= 1),
          ordinal integer NOT NULL DEFAULT 0,
          edition_code text COLLATE "C" NOT NULL,
          chapter_code text COLLATE "C",
          updated_at double precision NOT NULL)
        """,
        "CREATE INDEX curriculum_parent ON curriculum_nodes(parent_code, code)",
        "CREATE INDEX curriculum_edition ON curriculum_nodes(edition_code, code)",
        "CREATE INDEX curriculum_chapter ON curriculum_nodes(chapter_code)",
        """
        CREATE TABLE knowledge_points (
          code text COLLATE "C" PRIMARY KEY,
          name text NOT NULL,
          stage integer NOT NULL,
          subject integer NOT NULL,
          chapter_code text COLLATE "C" REFERENCES curriculum_nodes(code),
          updated_at double precision NOT NULL)
        """,
        "CREATE INDEX knowledge_points_subject ON knowledge_points(subject, stage, code)",
        """
        CREATE TABLE resources (
          seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          id text COLLATE "C" NOT NULL UNIQUE,
          external_id text COLLATE "C" UNIQUE,
          title text NOT NULL,
          description text NOT NULL,
          keywords text NOT NULL,
          type integer NOT NULL CHECK (type BETWEEN 1 AND 7),
          stage integer NOT NULL,
          grade integer NOT NULL,
          subject integer NOT NULL,
          edition_code text COLLATE "C" REFERENCES curriculum_nodes(code),
          chapter_code text COLLATE "C" REFERENCES curriculum_nodes(code),
          top_chapter_code text COLLATE "C",
          knowledge_points text COLLATE "C" NOT NULL,
          author_id text COLLATE "C" NOT NULL,
          author_name text NOT NULL,
          owner_org_id text COLLATE "C" NOT NULL,
          owner_org_code text COLLATE "C" NOT NULL,
          owner_path text COLLATE "C" NOT NULL,
          reach_path text COLLATE "C" NOT NULL,
          sharing_scope integer NOT NULL CHECK (sharing_scope BETWEEN 1 AND 4),
          licence text NOT NULL,
          status integer NOT NULL CHECK (status BETWEEN 1 AND 4),
          review_comment text NOT NULL DEFAULT '',
          content_size bigint,
          content_mime text,
          content_sha256 text COLLATE "C",
          content_name text,
          content_time double precision,
          views bigint NOT NULL DEFAULT 0,
          downloads bigint NOT NULL DEFAULT 0,
          favourites bigint NOT NULL DEFAULT 0,
          rating_count bigint NOT NULL DEFAULT 0,
          rating_sum bigint NOT NULL DEFAULT 0,
          popularity double precision NOT NULL DEFAULT 0,
          created_at double precision NOT NULL,
          updated_at double precision NOT NULL,
          published_at double precision,
          deleted_at double precision)
        """,
        "CREATE INDEX resources_subject ON resources(subject, grade, type)",
        "CREATE INDEX resources_stage ON resources(stage, grade)",
        "CREATE INDEX resources_owner ON resources(owner_path)",
        "CREATE INDEX resources_reach ON resources(reach_path, status)",
        "CREATE INDEX resources_author ON resources(author_id)",
        "CREATE INDEX resources_chapter ON resources(top_chapter_code)",
        "CREATE INDEX resources_edition ON resources(edition_code)",
        "CREATE INDEX resources_popularity ON resources(popularity)",
        """
        CREATE TABLE resource_knowledge_points (
          code text COLLATE "C" NOT NULL REFERENCES knowledge_points(code),
          resource_seq bigint NOT NULL REFERENCES resources(seq),
          PRIMARY KEY (code, resource_seq))
        """,
        """
        CREATE INDEX resource_knowledge_points_resource
          ON resource_knowledge_points(resource_seq)
        """,
        """
        CREATE TABLE transitions (
          seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          resource_seq bigint NOT NULL REFERENCES resources(seq),
          action integer NOT NULL,
          from_status integer NOT NULL,
          to_status integer NOT NULL,
          actor_id text COLLATE "C" NOT NULL,
          actor_name text NOT NULL,
          comment text NOT NULL,
          time double precision NOT NULL)
        """,
        "CREATE INDEX transitions_resource ON transitions(resource_seq, seq)",
        """
        CREATE TABLE usage_events (
          seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          resource_seq bigint NOT NULL REFERENCES resources(seq),
          kind integer NOT NULL CHECK (kind BETWEEN 1 AND 5),
          user_id text COLLATE "C" NOT NULL,
          user_path text COLLATE "C" NOT NULL,
          stars integer NOT NULL DEFAULT 0,
          time double precision NOT NULL)
        """,
        "CREATE INDEX usage_events_time ON usage_events(time)",
        "CREATE INDEX usage_events_path ON usage_events(user_path, time)",
        """
        CREATE TABLE favourites (
          resource_seq bigint NOT NULL REFERENCES resources(seq),
          user_id text COLLATE "C" NOT NULL,
          time double precision NOT NULL,
          PRIMARY KEY (resource_seq, user_id))
        """,
        """
        CREATE TABLE ratings (
          resource_seq bigint NOT NULL REFERENCES resources(seq),
          user_id text COLLATE "C" NOT NULL,
          stars integer NOT NULL CHECK (stars BETWEEN 1 AND 5),
          time double precision NOT NULL,
          PRIMARY KEY (resource_seq, user_id))
        """,
        // Search's inverted index (SearchIndex), the same tables as SQLite's catalogue.3.
        """
        CREATE TABLE search_documents (
          resource_seq bigint PRIMARY KEY REFERENCES resources(seq),
          title_len integer NOT NULL,
          keywords_len integer NOT NULL,
          description_len integer NOT NULL)
        """,
        """
        CREATE TABLE search_postings (
          token text COLLATE "C" NOT NULL,
          resource_seq bigint NOT NULL REFERENCES resources(seq),
          title_pos text NOT NULL,
          keywords_pos text NOT NULL,
          description_pos text NOT NULL,
          PRIMARY KEY (token, resource_seq))
        """,
        "CREATE INDEX search_postings_resource ON search_postings(resource_seq)",
        """
        CREATE TABLE search_stats (
          id integer PRIMARY KEY CHECK (id = 1),
          documents bigint NOT NULL,
          title_len bigint NOT NULL,
          keywords_len bigint NOT NULL,
          description_len bigint NOT NULL)
        """,
        """
        INSERT INTO search_stats (id, documents, title_len, keywords_len, description_len)
        VALUES (1, 0, 0, 0, 0)
        """,
      ]),
    // Resource content for every replica (PostgresContentStore): uploads in progress, the
    // chunks, and published blobs by SHA-256. Chunks are stored uncompressed out of line
    // (STORAGE EXTERNAL): content is mostly compressed already (PDF, video, Office files), and
    // trying to compress each megabyte again would only cost CPU.
    PostgresMigration(
      "catalogue.2.content",
      [
        """
        CREATE TABLE content_uploads (
          id text COLLATE "C" PRIMARY KEY,
          replica text NOT NULL,
          started_at double precision NOT NULL,
          touched_at double precision NOT NULL)
        """,
        "CREATE INDEX content_uploads_touched ON content_uploads(touched_at)",
        """
        CREATE TABLE content_chunks (
          blob_id text COLLATE "C" NOT NULL,
          seq integer NOT NULL CHECK (seq >= 0),
          data bytea NOT NULL,
          PRIMARY KEY (blob_id, seq))
        """,
        "ALTER TABLE content_chunks ALTER COLUMN data SET STORAGE EXTERNAL",
        """
        CREATE TABLE content_blobs (
          sha256 text COLLATE "C" PRIMARY KEY,
          blob_id text COLLATE "C" NOT NULL UNIQUE,
          size bigint NOT NULL CHECK (size >= 0),
          chunk_bytes integer NOT NULL CHECK (chunk_bytes > 0),
          chunk_count integer NOT NULL CHECK (chunk_count >= 0),
          created_at double precision NOT NULL)
        """,
      ]),
    // Search postings hold packed counts and lengths (SearchIndex.counts, packLengths: all a
    // search reads for every match); positions move to search_positions in document order,
    // read for the few best candidates. Existing rows are converted here in SQL.
    PostgresMigration(
      "catalogue.3.search-counts",
      [
        """
        CREATE TABLE search_positions (
          resource_seq bigint NOT NULL REFERENCES resources(seq),
          token text COLLATE "C" NOT NULL,
          title_pos text NOT NULL,
          keywords_pos text NOT NULL,
          description_pos text NOT NULL,
          PRIMARY KEY (resource_seq, token))
        """,
        """
        INSERT INTO search_positions
        SELECT resource_seq, token, title_pos, keywords_pos, description_pos FROM search_postings
        """,
        """
        CREATE TABLE search_postings_counted (
          token text COLLATE "C" NOT NULL,
          resource_seq bigint NOT NULL REFERENCES resources(seq),
          counts bigint NOT NULL,
          lengths bigint NOT NULL)
        """,
        """
        INSERT INTO search_postings_counted (token, resource_seq, counts, lengths)
        SELECT p.token, p.resource_seq,
          (SELECT coalesce(sum((least(f.aligned, 1023) << (20 * f.field))
              | (least(f.loose, 1023) << (20 * f.field + 10))), 0)::bigint
            FROM (
              SELECT (x.o - 1)::int AS field,
                count(*) FILTER (WHERE v.p::int >= 0)::bigint AS aligned,
                count(*) FILTER (WHERE v.p::int < 0)::bigint AS loose
              FROM unnest(ARRAY[p.title_pos, p.keywords_pos, p.description_pos])
                WITH ORDINALITY AS x(pos, o)
                CROSS JOIN LATERAL unnest(string_to_array(x.pos, ',')) AS v(p)
              GROUP BY x.o) AS f)
          | (CASE WHEN string_to_array(p.title_pos, ',') && ARRAY['0', '-1']
              THEN (1::bigint << 60) ELSE 0::bigint END),
          (least(d.title_len, 1048575)::bigint
            | (least(d.keywords_len, 1048575)::bigint << 20)
            | (least(d.description_len, 1048575)::bigint << 40))
        FROM search_postings p JOIN search_documents d ON d.resource_seq = p.resource_seq
        """,
        "DROP TABLE search_postings",
        "ALTER TABLE search_postings_counted RENAME TO search_postings",
        "ALTER TABLE search_postings ADD PRIMARY KEY (token, resource_seq)",
      ]),
    // Searches without words count and rank every visible resource: this index covers what
    // they read of published resources (PostgresCatalogueStore.visibleArms), index-only.
    PostgresMigration(
      "catalogue.4.visible-index",
      [
        """
        CREATE INDEX resources_visible ON resources
          (status, reach_path, type, subject, grade, stage, popularity, deleted_at)
        """
      ]),
    // Searches with words read postings and the rows they name without visiting the tables
    // (PostgresCatalogueStore.candidates): the postings' key carries their counts and
    // lengths; resources_search answers a lookup by seq with what the filters, visibility and
    // ranking read; resources_visible also gives the seq of the visible published rows, for
    // the hash join a query with many postings makes against them.
    PostgresMigration(
      "catalogue.5.search-covering",
      [
        """
        ALTER TABLE search_postings DROP CONSTRAINT search_postings_pkey,
          ADD PRIMARY KEY (token, resource_seq) INCLUDE (counts, lengths)
        """,
        """
        CREATE INDEX resources_search ON resources (seq) INCLUDE (status, deleted_at, stage,
          grade, subject, type, popularity, author_id, reach_path, owner_path, edition_code,
          top_chapter_code, chapter_code)
        """,
        "DROP INDEX resources_visible",
        """
        CREATE INDEX resources_visible ON resources
          (status, reach_path, type, subject, grade, stage, popularity, deleted_at) INCLUDE (seq)
        """,
      ]),
    // A document's positions move into its search_documents row as one text
    // (SearchIndex.encodePositions): a create writes one row there instead of one per token.
    PostgresMigration(
      "catalogue.6.search-positions",
      [
        "ALTER TABLE search_documents ADD COLUMN positions text NOT NULL DEFAULT ''",
        """
        UPDATE search_documents d SET positions = p.text
        FROM (
          SELECT resource_seq, string_agg(
              token || E'\\t' || title_pos || E'\\t' || keywords_pos || E'\\t'
                || description_pos, E'\\n' ORDER BY token) AS text
          FROM search_positions GROUP BY resource_seq) AS p
        WHERE p.resource_seq = d.resource_seq
        """,
        "DROP TABLE search_positions",
      ]),
    // The statistics row becomes stripes summed when read (SearchIndex.statsTotals): each
    // indexing transaction holds the row it moves until it commits, so with one row every
    // concurrent create queued there behind the others' commits.
    PostgresMigration(
      "catalogue.7.stats-stripes",
      [
        "ALTER TABLE search_stats DROP CONSTRAINT search_stats_id_check",
        """
        ALTER TABLE search_stats ADD CONSTRAINT search_stats_stripe
          CHECK (id BETWEEN 1 AND \(SearchIndex.statsStripes))
        """,
        """
        INSERT INTO search_stats (id, documents, title_len, keywords_len, description_len)
        SELECT g, 0, 0, 0, 0 FROM generate_series(2, \(SearchIndex.statsStripes)) AS g
        """,
      ]),
    // Postings are the index's own rows, written and removed with their resource by the store
    // (and resources are never deleted, only marked): the foreign key's trigger looked the
    // resource up and locked it for each of a create's ~100 postings (8 µs a posting in
    // `psql`, 2.6 s against 1.0 s for 200,000).
    PostgresMigration(
      "catalogue.8.postings-unchecked",
      ["ALTER TABLE search_postings DROP CONSTRAINT search_postings_counted_resource_seq_fkey"]),
  ]
}
