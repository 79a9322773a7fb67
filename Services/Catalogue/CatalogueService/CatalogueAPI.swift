import Foundation
import GRPCCore
import Logging
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf

typealias Org = Smartschool_Identity_V1_Org

/// The catalogue's RPC handlers: decode, authorize, validate, call the store, map.
struct CatalogueAPI: Smartschool_Catalogue_V1_CatalogueService.SimpleServiceProtocol {
  let store: any CatalogueStore
  let blobs: any ContentStore
  let directory: OrgDirectory
  let settings: CatalogueSettings
  let logger: Logger

  static let administrators: [Role] = [
    .systemAdmin, .provinceAdmin, .cityAdmin, .countyAdmin, .schoolAdmin,
  ]

  // MARK: Helpers

  /// Resolves an org by id or code from the local copy of identity's tree, syncing once on a
  /// miss (the org may be brand new). NOT_FOUND for an unknown org.
  private func resolveOrg(id: String, code: String, field: String) async throws -> Org {
    if id.isEmpty && code.isEmpty { throw ServiceError.invalid(field, "name an org by id or code") }
    func lookup() -> Org? { id.isEmpty ? directory.org(code: code) : directory.org(id: id) }
    if let org = lookup() { return org }
    try? await directory.sync()
    guard let org = lookup() else {
      throw ServiceError.notFound("org '\(id.isEmpty ? code : id)' not found")
    }
    return org
  }

  private func path(_ org: Org) throws -> OrgPath {
    guard let p = OrgPath(org.path) else {
      throw ServiceError.internalError("org \(org.code) has a malformed path")
    }
    return p
  }

  /// A resource the caller sees, or NOT_FOUND.
  private func visible(id: String, externalID: String = "", _ p: Principal, field: String)
    async throws -> StoredResource
  {
    let stored: StoredResource?
    if !id.isEmpty {
      stored = try await store.resource(id: id)
    } else if !externalID.isEmpty {
      stored = try await store.resource(externalID: externalID)
    } else {
      throw ServiceError.invalid(field, "name a resource")
    }
    guard let stored,
      Visibility.canSee(
        status: stored.resource.status, authorID: stored.resource.authorID, owner: stored.owner,
        reach: stored.reach, viewer: Viewer(p))
    else {
      throw ServiceError.notFound("resource '\(id.isEmpty ? externalID : id)' not found")
    }
    return stored
  }

  private func requireAuthor(_ r: StoredResource, _ p: Principal, doing what: String) throws {
    guard r.resource.authorID == p.userID else {
      throw ServiceError.permissionDenied("only the author may \(what)")
    }
  }

  private func requireEditable(_ r: StoredResource) throws {
    guard Workflow.isEditable(r.resource.status) else {
      throw ServiceError.failedPrecondition(
        "the resource is \(Workflow.name(r.resource.status)); only draft and rejected resources "
          + "can be changed (withdraw or unpublish it first)")
    }
  }

  /// Fills stage, grade, subject and edition from the chapter (or edition) and checks that
  /// given values agree; returns the chapter a chapter or section belongs to. INVALID_ARGUMENT
  /// for unknown or mismatching references.
  private func resolveCurriculum(_ r: inout Resource, prefix: String = "resource.") async throws
    -> String?
  {
    var v = Validator()
    var top: String? = nil
    func agree<T: Equatable>(_ given: inout T, _ actual: T, unset: T, _ field: String) {
      if given == unset {
        given = actual
      } else if given != actual {
        v.add(prefix + field, "differs from the chapter's")
      }
    }
    if !r.chapterCode.isEmpty {
      guard let node = try await store.curriculumNode(code: r.chapterCode) else {
        throw ServiceError.invalid(prefix + "chapter_code", "unknown chapter '\(r.chapterCode)'")
      }
      guard node.kind == .chapter || node.kind == .section else {
        throw ServiceError.invalid(prefix + "chapter_code", "must name a chapter or section")
      }
      agree(&r.editionCode, node.editionCode, unset: "", "edition_code")
      agree(&r.stage, node.stage, unset: .unspecified, "stage")
      agree(&r.subject, node.subject, unset: .unspecified, "subject")
      agree(&r.grade, node.grade, unset: 0, "grade")
      top = node.kind == .chapter ? node.code : node.parentCode
    } else if !r.editionCode.isEmpty {
      guard let node = try await store.curriculumNode(code: r.editionCode),
        node.kind == .edition
      else {
        throw ServiceError.invalid(prefix + "edition_code", "unknown edition '\(r.editionCode)'")
      }
      agree(&r.stage, node.stage, unset: .unspecified, "stage")
      agree(&r.subject, node.subject, unset: .unspecified, "subject")
    }
    try v.throwIfInvalid()
    return top
  }

  /// INVALID_ARGUMENT naming the first unknown knowledge point.
  private func checkKnowledgePoints(_ codes: [String], field: String) async throws {
    if codes.isEmpty { return }
    let known = Set(try await store.knowledgePoints(codes: codes).map(\.code))
    var v = Validator()
    for (i, code) in codes.enumerated() where !known.contains(code) {
      v.add("\(field)[\(i)]", "unknown knowledge point '\(code)'")
    }
    try v.throwIfInvalid()
  }

  /// Validates and resolves a list filter.
  private func resolve(_ f: Smartschool_Catalogue_V1_ResourceFilter, field: String = "filter")
    async throws -> ResolvedFilter
  {
    var v = Validator()
    var r = ResolvedFilter()
    if f.stage != .unspecified {
      if ResourceRules.isKnown(f.stage) {
        r.stage = f.stage.rawValue
      } else {
        v.add(field + ".stage", "unknown stage")
      }
    }
    if f.grade != 0 {
      if (1...12).contains(f.grade) {
        r.grade = Int(f.grade)
      } else {
        v.add(field + ".grade", "must be 1-12")
      }
    }
    if f.subject != .unspecified {
      if ResourceRules.isKnown(f.subject) {
        r.subject = f.subject.rawValue
      } else {
        v.add(field + ".subject", "unknown subject")
      }
    }
    if f.type != .unspecified {
      if ResourceRules.isKnown(f.type) {
        r.types = [f.type.rawValue]
      } else {
        v.add(field + ".type", "unknown resource type")
      }
    }
    if f.status != .unspecified {
      if ResourceRules.isKnown(f.status) {
        r.status = f.status.rawValue
      } else {
        v.add(field + ".status", "unknown status")
      }
    }
    if !f.editionCode.isEmpty {
      v.code(f.editionCode, field + ".edition_code")
      r.editionCode = f.editionCode
    }
    if !f.knowledgePointCode.isEmpty {
      v.code(f.knowledgePointCode, field + ".knowledge_point_code")
      r.knowledgePoint = f.knowledgePointCode
    }
    if !f.authorID.isEmpty { r.authorID = f.authorID }
    if !f.chapterCode.isEmpty { v.code(f.chapterCode, field + ".chapter_code") }
    try v.throwIfInvalid()
    if !f.chapterCode.isEmpty {
      guard let node = try await store.curriculumNode(code: f.chapterCode) else {
        throw ServiceError.invalid(field + ".chapter_code", "unknown chapter '\(f.chapterCode)'")
      }
      switch node.kind {
      case .chapter: r.chapterCode = node.code
      case .section: r.sectionCode = node.code
      default:
        throw ServiceError.invalid(field + ".chapter_code", "must name a chapter or section")
      }
    }
    if !f.ownerOrgID.isEmpty || !f.ownerOrgCode.isEmpty {
      let org = try await resolveOrg(
        id: f.ownerOrgID, code: f.ownerOrgCode, field: field + ".owner_org_code")
      r.ownerSubtree = try path(org)
    }
    return r
  }

  /// Where the caller's usage counts: their first binding that may read resources.
  private func usagePath(_ p: Principal) -> String {
    let binding =
      p.bindings.first { PermissionTable.permissions(of: $0.role).contains(.resourcesRead) }
      ?? p.bindings.first
    return binding?.orgPath.description ?? "/"
  }

  // MARK: Resources

  func createResource(
    request: Smartschool_Catalogue_V1_CreateResourceRequest, context: ServerContext
  ) async throws -> Resource {
    let p = try Principal.require()
    var r = ResourceRules.normalize(request.resource)
    // The owner: named, or the org of the caller's first binding that may write resources
    // (a class binding means its school).
    var owner: Org
    if !r.ownerOrgID.isEmpty || !r.ownerOrgCode.isEmpty {
      owner = try await resolveOrg(
        id: r.ownerOrgID, code: r.ownerOrgCode, field: "resource.owner_org_code")
      guard owner.kind != .class else {
        throw ServiceError.invalid(
          "resource.owner_org_code", "must be a school, county, city or province, not a class")
      }
    } else {
      guard
        let binding = p.bindings.first(where: {
          PermissionTable.permissions(of: $0.role).contains(.resourcesWrite) && !$0.orgID.isEmpty
        })
      else {
        throw ServiceError.invalid("resource.owner_org_code", "name the owning org")
      }
      owner = try await resolveOrg(id: binding.orgID, code: "", field: "resource.owner_org_code")
      if owner.kind == .class, let school = directory.ancestor(of: owner.id, kind: .school) {
        owner = school
      }
    }
    guard owner.active else {
      throw ServiceError.failedPrecondition("the owning org is deactivated")
    }
    let ownerPath = try path(owner)
    try p.require(.resourcesWrite, at: ownerPath)
    let top = try await resolveCurriculum(&r)
    try Validator.throwing(ResourceRules.violations(r))
    try await checkKnowledgePoints(r.knowledgePointCodes, field: "resource.knowledge_point_codes")
    r.id = EntityID.make()
    r.authorID = p.userID
    r.authorName = p.username
    r.ownerOrgID = owner.id
    r.ownerOrgCode = owner.code
    r.ownerOrgPath = owner.path
    r.status = .draft
    let stored = try await store.insertResource(
      r, reach: Visibility.reach(owner: ownerPath, scope: r.sharingScope), topChapter: top)
    return stored.resource
  }

  func getResource(request: Smartschool_Catalogue_V1_GetResourceRequest, context: ServerContext)
    async throws -> Resource
  {
    let p = try Principal.require()
    return try await visible(id: request.id, externalID: request.externalID, p, field: "id")
      .resource
  }

  static let editableFields: Set<String> = [
    "title", "description", "keywords", "type", "stage", "grade", "subject", "edition_code",
    "chapter_code", "knowledge_point_codes", "sharing_scope", "licence",
  ]

  func updateResource(
    request: Smartschool_Catalogue_V1_UpdateResourceRequest, context: ServerContext
  ) async throws -> Resource {
    let p = try Principal.require()
    var paths = Set(request.updateMask.paths)
    if paths.isEmpty { paths = Self.editableFields }
    if let bad = paths.sorted().first(where: { !Self.editableFields.contains($0) }) {
      throw ServiceError.invalid("update_mask", "field '\(bad)' cannot be updated")
    }
    let current = try await visible(id: request.resource.id, p, field: "resource.id")
    try requireAuthor(current, p, doing: "edit a resource")
    try requireEditable(current)
    try p.require(.resourcesWrite, at: current.owner)
    let given = ResourceRules.normalize(request.resource)
    var r = current.resource
    if paths.contains("title") { r.title = given.title }
    if paths.contains("description") { r.description_p = given.description_p }
    if paths.contains("keywords") { r.keywords = given.keywords }
    if paths.contains("type") { r.type = given.type }
    if paths.contains("stage") { r.stage = given.stage }
    if paths.contains("grade") { r.grade = given.grade }
    if paths.contains("subject") { r.subject = given.subject }
    if paths.contains("edition_code") { r.editionCode = given.editionCode }
    if paths.contains("chapter_code") {
      r.chapterCode = given.chapterCode
      // A new chapter brings its own edition, stage, grade and subject unless they are set too.
      if !paths.contains("edition_code") { r.editionCode = "" }
      if !paths.contains("stage") { r.stage = .unspecified }
      if !paths.contains("grade") { r.grade = 0 }
      if !paths.contains("subject") { r.subject = .unspecified }
    }
    if paths.contains("knowledge_point_codes") { r.knowledgePointCodes = given.knowledgePointCodes }
    if paths.contains("sharing_scope") { r.sharingScope = given.sharingScope }
    if paths.contains("licence") { r.licence = given.licence }
    r = ResourceRules.normalize(r)
    let top = try await resolveCurriculum(&r)
    try Validator.throwing(ResourceRules.violations(r))
    try await checkKnowledgePoints(r.knowledgePointCodes, field: "resource.knowledge_point_codes")
    let stored = try await store.updateResource(
      seq: current.seq, r, reach: Visibility.reach(owner: current.owner, scope: r.sharingScope),
      topChapter: top)
    return stored.resource
  }

  func deleteResource(
    request: Smartschool_Catalogue_V1_DeleteResourceRequest, context: ServerContext
  ) async throws -> Smartschool_Catalogue_V1_DeleteResourceResponse {
    let p = try Principal.require()
    let r = try await visible(id: request.id, p, field: "id")
    let allowed =
      r.resource.authorID == p.userID
      || Visibility.isReviewer(Viewer(p), owner: r.owner)
      || Self.administrators.contains { p.holds($0, covering: r.owner) }
    guard allowed else {
      throw ServiceError.permissionDenied(
        "only the author, a reviewer or an admin of the owner may delete a resource")
    }
    try await store.deleteResource(seq: r.seq)
    return .init()
  }

  func listResources(
    request: Smartschool_Catalogue_V1_ListResourcesRequest, context: ServerContext
  ) async throws -> Smartschool_Catalogue_V1_ListResourcesResponse {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    let fingerprint = "list|" + request.filter.textFormatString()
    let token = try PageToken.decode(request.pageToken, query: fingerprint)
    var before: Int64? = nil
    if let token {
      guard let text = token.after.first, let seq = Int64(text) else {
        throw ServiceError.invalid("page_token", "is not a page token this service issued")
      }
      before = seq
    }
    let filter = try await resolve(request.filter)
    let rows = try await store.listResources(
      filter: filter, viewer: Viewer(p), beforeSeq: before, limit: limit + 1)
    return .with {
      $0.resources = rows.prefix(limit).map(\.resource)
      if rows.count > limit, let last = rows.prefix(limit).last {
        $0.nextPageToken = PageToken(after: [String(last.seq)]).encode(query: fingerprint)
      }
    }
  }

  // MARK: Workflow

  func transitionResource(
    request: Smartschool_Catalogue_V1_TransitionResourceRequest, context: ServerContext
  ) async throws -> Resource {
    let p = try Principal.require()
    var v = Validator()
    v.text(request.comment, "comment", required: false, maxLength: 1000)
    try v.throwIfInvalid()
    let r = try await visible(id: request.id, p, field: "id")
    let viewer = Viewer(p)
    let isAuthor = r.resource.authorID == p.userID
    let isReviewer = Visibility.isReviewer(viewer, owner: r.owner)
    if !Workflow.actors(of: request.action).isEmpty {
      try Workflow.authorize(action: request.action, isAuthor: isAuthor, isReviewer: isReviewer)
    }
    let to = try Workflow.next(
      from: r.resource.status, action: request.action, comment: request.comment)
    // Reviewing the owner is not enough to publish: the resource becomes visible over its
    // whole reach, which may be far wider than the reviewer's own org.
    if to == .published && !Visibility.canPublish(viewer, reach: r.reach) {
      let reach = r.reach.ids.last.flatMap { directory.org(id: $0)?.code } ?? r.reach.description
      throw ServiceError.permissionDenied(
        "the resource is shared to its \(CatalogueNames.name(r.resource.sharingScope)) "
          + "(\(reach)): only a resource reviewer at \(reach) or above may "
          + Workflow.name(request.action) + " it")
    }
    try Workflow.checkContent(r.resource, action: request.action, to: to)
    let stored = try await store.transition(
      seq: r.seq, reach: r.reach, action: request.action, from: r.resource.status, to: to,
      actorID: p.userID, actorName: p.username,
      comment: request.comment.trimmingSpaces())
    return stored.resource
  }

  func listTransitions(
    request: Smartschool_Catalogue_V1_ListTransitionsRequest, context: ServerContext
  ) async throws -> Smartschool_Catalogue_V1_ListTransitionsResponse {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    let fingerprint = "transitions|" + request.resourceID
    let token = try PageToken.decode(request.pageToken, query: fingerprint)
    let r = try await visible(id: request.resourceID, p, field: "resource_id")
    let after = token.flatMap { $0.after.first }.flatMap { Int64($0) }
    let rows = try await store.transitions(resourceSeq: r.seq, afterSeq: after, limit: limit + 1)
    return .with {
      $0.transitions = Array(rows.prefix(limit))
      if rows.count > limit, let last = $0.transitions.last {
        $0.nextPageToken = PageToken(after: [String(last.sequence)]).encode(query: fingerprint)
      }
    }
  }

  // MARK: Search

  func searchResources(
    request: Smartschool_Catalogue_V1_SearchResourcesRequest, context: ServerContext
  ) async throws -> Smartschool_Catalogue_V1_SearchResourcesResponse {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    let query = try SearchQuery.parse(request.query)
    let fingerprint =
      "search|" + query.fingerprint + "|"
      + request.filter.textFormatString()
    let token = try PageToken.decode(request.pageToken, query: fingerprint)
    var offset = 0
    if let token {
      guard let text = token.after.first, let n = Int(text), n >= 0 else {
        throw ServiceError.invalid("page_token", "is not a page token this service issued")
      }
      offset = n
    }
    let filter = try await resolve(request.filter)
    let page = try await store.search(
      query: query, filter: filter, viewer: Viewer(p), offset: offset, limit: limit)
    func facets(_ key: (Int, Int, Int) -> Int, name: (Int) -> String)
      -> [Smartschool_Catalogue_V1_FacetCount]
    {
      var counts: [Int: Int] = [:]
      for g in page.groups { counts[key(g.subject, g.grade, g.type), default: 0] += g.count }
      return counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        .map { entry in
          .with {
            $0.value = Int32(entry.key)
            $0.name = name(entry.key)
            $0.count = Int64(entry.value)
          }
        }
    }
    return .with {
      $0.hits = page.hits.map { hit in
        .with {
          $0.resource = hit.resource.resource
          $0.relevance = hit.relevance
        }
      }
      $0.totalSize = Int64(page.total)
      $0.subjectFacets = facets({ s, _, _ in s }) {
        Smartschool_Common_V1_Subject(rawValue: $0)?.chineseName ?? "未指定"
      }
      $0.gradeFacets = facets({ _, g, _ in g }) { CatalogueNames.grade($0) }
      $0.typeFacets = facets({ _, _, t in t }) {
        CatalogueNames.chinese(Smartschool_Catalogue_V1_ResourceType(rawValue: $0) ?? .unspecified)
      }
      if offset + page.hits.count < page.total {
        $0.nextPageToken = PageToken(after: [String(offset + page.hits.count)])
          .encode(query: fingerprint)
      }
    }
  }

  // MARK: Content

  func uploadContent(
    request: RPCAsyncSequence<Smartschool_Catalogue_V1_UploadContentRequest, any Error>,
    context: ServerContext
  ) async throws -> Resource {
    let p = try Principal.require()
    var messages = request.makeAsyncIterator()
    guard let first = try await messages.next() else {
      throw ServiceError.invalid("header", "the upload stream is empty")
    }
    guard case .header(var header) = first.part else {
      throw ServiceError.invalid("header", "the first message must carry the header")
    }
    header.sha256 = header.sha256.lowercased()
    var v = Validator()
    v.check(ContentDigest.isSHA256(header.sha256), "header.sha256", "must be 64 hex characters")
    v.check(header.sizeBytes >= 0, "header.size_bytes", "must not be negative")
    v.text(header.mimeType, "header.mime_type", required: false, maxLength: 127)
    v.text(header.fileName, "header.file_name", required: false, maxLength: 255)
    try v.throwIfInvalid()
    if header.sizeBytes > settings.maxUploadBytes {
      throw ServiceError.resourceExhausted(
        "the content is \(header.sizeBytes) bytes; the limit is \(settings.maxUploadBytes)")
    }
    let r = try await visible(id: first.resourceID, p, field: "resource_id")
    try requireAuthor(r, p, doing: "upload content")
    try requireEditable(r)
    let upload = try await blobs.beginUpload()
    do {
      while let message = try await messages.next() {
        guard message.resourceID == first.resourceID else {
          throw ServiceError.invalid(
            "resource_id",
            "a chunk names resource '\(message.resourceID)', not '\(first.resourceID)'")
        }
        switch message.part {
        case .data(let data):
          if upload.size + Int64(data.count) > header.sizeBytes {
            throw ServiceError.invalid(
              "data", "more bytes arrived than the \(header.sizeBytes) declared")
          }
          try await upload.write(data)
        case .header:
          throw ServiceError.invalid("header", "only the first message carries a header")
        case .none:
          throw ServiceError.invalid("data", "a message after the header must carry data")
        }
      }
    } catch {
      await upload.discard()
      throw error
    }
    let published = try await upload.commit(
      expectedSHA256: header.sha256, expectedSize: header.sizeBytes)
    do {
      let stored = try await store.setContent(
        seq: r.seq,
        .with {
          $0.sizeBytes = header.sizeBytes
          $0.sha256 = published.sha256
          $0.mimeType = header.mimeType.isEmpty ? "application/octet-stream" : header.mimeType
          $0.fileName = header.fileName
        })
      return stored.resource
    } catch {
      await blobs.forget(published)
      throw error
    }
  }

  func downloadContent(
    request: Smartschool_Catalogue_V1_DownloadContentRequest,
    response: RPCWriter<Smartschool_Catalogue_V1_DownloadContentResponse>,
    context: ServerContext
  ) async throws {
    let p = try Principal.require()
    let r = try await visible(id: request.resourceID, p, field: "resource_id")
    guard r.resource.hasContent else {
      throw ServiceError.notFound("resource '\(request.resourceID)' has no content")
    }
    let content = r.resource.content
    guard request.offset >= 0 && request.offset <= content.sizeBytes else {
      throw ServiceError.invalid("offset", "must be 0-\(content.sizeBytes)")
    }
    if request.offset == 0 {
      _ = try await store.recordUsage(
        seq: r.seq,
        UsageEvent(
          kind: .download, stars: 0, userID: p.userID, userPath: usagePath(p), time: Date()))
    }
    if request.offset == content.sizeBytes {
      try await response.write(
        .with {
          $0.content = content
          $0.offset = request.offset
        })
      return
    }
    var first = true
    try await blobs.read(
      sha256: content.sha256, from: request.offset, pieceSize: settings.downloadChunkBytes
    ) { data, offset in
      try await response.write(
        .with {
          if first { $0.content = content }
          $0.offset = offset
          $0.data = data
        })
      first = false
    }
  }

  // MARK: Curriculum

  func importCurriculum(
    request: RPCAsyncSequence<Smartschool_Catalogue_V1_ImportCurriculumRequest, any Error>,
    context: ServerContext
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    let p = try Principal.require()
    guard let scope = p.scopes(for: .curriculumWrite).first(where: { $0.ids.count <= 1 }) else {
      throw ServiceError.permissionDenied(
        "importing the curriculum needs catalogue.curriculum.write at a province")
    }
    var summary = Smartschool_Common_V1_ImportSummary()
    var batch: [(index: Int, row: CurriculumRow)] = []
    var seenNodes: Set<String> = []
    var seenPoints: Set<String> = []
    func flush() async throws {
      guard !batch.isEmpty else { return }
      let result = try await store.importCurriculum(batch, orgPath: scope.description)
      summary.created += Int64(result.created)
      summary.updated += Int64(result.updated)
      summary.errors += result.errors
      batch.removeAll(keepingCapacity: true)
    }
    func reject(_ index: Int, _ key: String, _ field: String, _ reason: String) {
      summary.errors.append(
        .with {
          $0.index = Int64(index)
          $0.key = key
          $0.field = field
          $0.reason = reason
        })
    }
    var index = 0
    for try await message in request {
      defer { index += 1 }
      summary.received += 1
      switch message.row {
      case .node(var node):
        node.code = node.code.trimmingSpaces()
        node.parentCode = node.parentCode.trimmingSpaces()
        node.name = node.name.trimmingSpaces()
        let violations = ResourceRules.violations(node)
        if let first = violations.first {
          reject(
            index, node.code, first.field, violations.map(\.description).joined(separator: "; "))
        } else if !seenNodes.insert(node.code).inserted {
          reject(index, node.code, "node.code", "duplicate code in this stream")
        } else {
          batch.append((index, .node(node)))
        }
      case .knowledgePoint(var kp):
        kp.code = kp.code.trimmingSpaces()
        kp.name = kp.name.trimmingSpaces()
        let violations = ResourceRules.violations(kp)
        if let first = violations.first {
          reject(index, kp.code, first.field, violations.map(\.description).joined(separator: "; "))
        } else if !seenPoints.insert(kp.code).inserted {
          reject(index, kp.code, "knowledge_point.code", "duplicate code in this stream")
        } else {
          batch.append((index, .knowledgePoint(kp)))
        }
      case .none:
        reject(index, "", "row", "a row must carry a node or a knowledge point")
      }
      if batch.count >= 500 { try await flush() }
    }
    try await flush()
    summary.errors.sort { $0.index < $1.index }
    summary.rejected = Int64(summary.errors.count)
    summary.accepted = summary.received - summary.rejected
    return summary
  }

  func listCurriculum(
    request: Smartschool_Catalogue_V1_ListCurriculumRequest, context: ServerContext
  ) async throws -> Smartschool_Catalogue_V1_ListCurriculumResponse {
    _ = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    let fingerprint =
      "curriculum|\(request.editionCode)|\(request.parentCode)|\(request.kind.rawValue)"
    let token = try PageToken.decode(request.pageToken, query: fingerprint)
    if request.kind != .unspecified && !(1...4).contains(request.kind.rawValue) {
      throw ServiceError.invalid("kind", "unknown node kind")
    }
    if !request.editionCode.isEmpty {
      guard let e = try await store.curriculumNode(code: request.editionCode), e.kind == .edition
      else { throw ServiceError.notFound("edition '\(request.editionCode)' not found") }
    }
    if !request.parentCode.isEmpty {
      guard try await store.curriculumNode(code: request.parentCode) != nil else {
        throw ServiceError.notFound("curriculum node '\(request.parentCode)' not found")
      }
    }
    let nodes = try await store.listCurriculum(
      editionCode: request.editionCode.isEmpty ? nil : request.editionCode,
      parentCode: request.parentCode.isEmpty ? nil : request.parentCode,
      kind: request.kind == .unspecified ? nil : request.kind.rawValue,
      afterCode: token?.after.first, limit: limit + 1)
    return .with {
      $0.nodes = Array(nodes.prefix(limit))
      if nodes.count > limit, let last = $0.nodes.last {
        $0.nextPageToken = PageToken(after: [last.code]).encode(query: fingerprint)
      }
    }
  }

  func listKnowledgePoints(
    request: Smartschool_Catalogue_V1_ListKnowledgePointsRequest, context: ServerContext
  ) async throws -> Smartschool_Catalogue_V1_ListKnowledgePointsResponse {
    _ = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    let fingerprint =
      "points|\(request.stage.rawValue)|\(request.subject.rawValue)|\(request.chapterCode)"
    let token = try PageToken.decode(request.pageToken, query: fingerprint)
    var v = Validator()
    v.check(
      request.stage == .unspecified || ResourceRules.isKnown(request.stage), "stage",
      "unknown stage")
    v.check(
      request.subject == .unspecified || ResourceRules.isKnown(request.subject), "subject",
      "unknown subject")
    try v.throwIfInvalid()
    let points = try await store.listKnowledgePoints(
      stage: request.stage == .unspecified ? nil : request.stage.rawValue,
      subject: request.subject == .unspecified ? nil : request.subject.rawValue,
      chapterCode: request.chapterCode.isEmpty ? nil : request.chapterCode,
      afterCode: token?.after.first, limit: limit + 1)
    return .with {
      $0.knowledgePoints = Array(points.prefix(limit))
      if points.count > limit, let last = $0.knowledgePoints.last {
        $0.nextPageToken = PageToken(after: [last.code]).encode(query: fingerprint)
      }
    }
  }

  func getCaseCoverage(
    request: Smartschool_Catalogue_V1_GetCaseCoverageRequest, context: ServerContext
  ) async throws -> Smartschool_Catalogue_V1_CaseCoverageReport {
    let p = try Principal.require()
    var v = Validator()
    v.check(
      request.stage == .unspecified || ResourceRules.isKnown(request.stage), "stage",
      "unknown stage")
    v.check(
      request.subject == .unspecified || ResourceRules.isKnown(request.subject), "subject",
      "unknown subject")
    try v.throwIfInvalid()
    let org = try await resolveOrg(id: request.orgID, code: request.orgCode, field: "org_code")
    let scope = try path(org)
    try p.require(.resourcesRead, at: scope)
    let edition = request.editionCode.isEmpty ? nil : request.editionCode
    if let edition {
      guard let e = try await store.curriculumNode(code: edition), e.kind == .edition else {
        throw ServiceError.notFound("edition '\(edition)' not found")
      }
    }
    let stage = request.stage == .unspecified ? nil : request.stage.rawValue
    let subject = request.subject == .unspecified ? nil : request.subject.rawValue
    let chapters = try await store.chapters(editionCode: edition, stage: stage, subject: subject)
    let covered = try await store.coveredChapters(
      viewer: Viewer(scope: scope), editionCode: edition, stage: stage, subject: subject)
    let report = Coverage.report(chapters: chapters, covered: covered)
    return .with {
      $0.orgID = org.id
      $0.orgCode = org.code
      $0.rows = report.rows
      $0.total = report.total
      $0.targetPercent = Coverage.targetPercent
    }
  }

  // MARK: Usage

  func recordUsage(request: Smartschool_Catalogue_V1_RecordUsageRequest, context: ServerContext)
    async throws -> ResourceStats
  {
    let p = try Principal.require()
    var v = Validator()
    v.check((1...5).contains(request.kind.rawValue), "kind", "must be a known usage kind")
    if request.kind == .rate {
      v.check((1...5).contains(request.rating), "rating", "must be 1-5")
    } else {
      v.check(request.rating == 0, "rating", "is only for RATE")
    }
    try v.throwIfInvalid()
    let r = try await visible(id: request.resourceID, p, field: "resource_id")
    return try await store.recordUsage(
      seq: r.seq,
      UsageEvent(
        kind: request.kind, stars: Int(request.rating), userID: p.userID, userPath: usagePath(p),
        time: Date()))
  }

  func getResourceStats(
    request: Smartschool_Catalogue_V1_GetResourceStatsRequest, context: ServerContext
  ) async throws -> ResourceStats {
    let p = try Principal.require()
    return try await visible(id: request.resourceID, p, field: "resource_id").resource.stats
  }

  func listPopular(request: Smartschool_Catalogue_V1_ListPopularRequest, context: ServerContext)
    async throws -> Smartschool_Catalogue_V1_ListPopularResponse
  {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    var v = Validator()
    let start = request.hasStartTime ? v.timestamp(request.startTime, "start_time") : nil
    let end = request.hasEndTime ? v.timestamp(request.endTime, "end_time") : nil
    if let start, let end, end <= start { v.add("end_time", "must be after start_time") }
    try v.throwIfInvalid()
    let org = try await resolveOrg(id: request.orgID, code: request.orgCode, field: "org_code")
    let scope = try path(org)
    try p.require(.resourcesRead, at: scope)
    let filter = try await resolve(request.filter)
    let rows = try await store.popular(
      scope: scope, start: start, end: end, filter: filter, limit: limit)
    return .with {
      $0.resources = rows.map { row in
        .with {
          $0.resource = row.resource.resource
          $0.views = row.usage.views
          $0.downloads = row.usage.downloads
          $0.favourites = row.usage.favourites
          $0.ratings = row.usage.ratings
          $0.score = Ranking.periodScore(row.usage)
        }
      }
    }
  }

  func recommendResources(
    request: Smartschool_Catalogue_V1_RecommendResourcesRequest, context: ServerContext
  ) async throws -> Smartschool_Catalogue_V1_RecommendResourcesResponse {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    var codes: [String] = []
    for code in request.knowledgePointCodes.map({ $0.trimmingSpaces() })
    where !codes.contains(code) {
      codes.append(code)
    }
    var v = Validator()
    v.check(!codes.isEmpty, "knowledge_point_codes", "name at least one knowledge point")
    v.check(
      codes.count <= ResourceRules.maxKnowledgePoints, "knowledge_point_codes",
      "must have at most \(ResourceRules.maxKnowledgePoints) codes")
    for (i, code) in codes.enumerated() { v.code(code, "knowledge_point_codes[\(i)]") }
    v.check(
      request.stage == .unspecified || ResourceRules.isKnown(request.stage), "stage",
      "unknown stage")
    v.check(
      request.subject == .unspecified || ResourceRules.isKnown(request.subject), "subject",
      "unknown subject")
    v.check((0...12).contains(request.grade), "grade", "must be 1-12 (0 = any)")
    for (i, t) in request.types.enumerated() where !ResourceRules.isKnown(t) {
      v.add("types[\(i)]", "unknown resource type")
    }
    try v.throwIfInvalid()
    try await checkKnowledgePoints(codes, field: "knowledge_point_codes")
    var filter = ResolvedFilter()
    if request.stage != .unspecified { filter.stage = request.stage.rawValue }
    if request.grade != 0 { filter.grade = Int(request.grade) }
    if request.subject != .unspecified { filter.subject = request.subject.rawValue }
    filter.types = Array(Set(request.types.map(\.rawValue))).sorted()
    let candidates = try await store.recommendationCandidates(
      codes: codes, filter: filter, viewer: Viewer(p), limit: max(limit * 4, 1000))
    let byID = Dictionary(
      candidates.map { ($0.resource.resource.id, $0) }, uniquingKeysWith: { a, _ in a })
    let ranked = candidates.map { c in
      Ranking.Candidate(
        id: c.resource.resource.id, matched: c.matched.count,
        ratingSum: Int64(
          (c.resource.resource.stats.ratingAverage
            * Double(c.resource.resource.stats.ratingCount)).rounded()),
        ratingCount: c.resource.resource.stats.ratingCount,
        popularity: c.resource.resource.stats.popularity)
    }.sorted(by: Ranking.recommendationOrder)
    return .with {
      $0.recommendations = ranked.prefix(limit).map { candidate in
        let c = byID[candidate.id]!
        return .with {
          $0.resource = c.resource.resource
          $0.matchedKnowledgePointCodes = c.matched
          $0.coverage = Double(c.matched.count) / Double(codes.count)
        }
      }
    }
  }

  // MARK: Change feed

  func listChanges(request: Smartschool_Common_V1_ListChangesRequest, context: ServerContext)
    async throws -> Smartschool_Common_V1_ListChangesResponse
  {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    guard request.afterSequence >= 0 else {
      throw ServiceError.invalid("after_sequence", "must not be negative")
    }
    let scopes = p.scopes(for: .changesRead)
    if scopes.isEmpty { throw ServiceError.permissionDenied("you may not read the change feed") }
    let (changes, more) = try await store.changes(
      after: request.afterSequence, limit: limit, scopes: scopes)
    return .with {
      $0.changes = changes
      $0.lastSequence = changes.last?.sequence ?? request.afterSequence
      $0.moreAvailable = more
    }
  }
}

extension Validator {
  /// Throws INVALID_ARGUMENT with `violations`, if any.
  static func throwing(_ violations: [FieldViolation]) throws(ServiceError) {
    if !violations.isEmpty { throw .invalidArgument(violations) }
  }
}
