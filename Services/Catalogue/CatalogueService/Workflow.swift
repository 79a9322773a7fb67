import ServiceRuntime
import SmartSchoolModel

typealias ResourceStatus = Smartschool_Catalogue_V1_ResourceStatus
typealias ReviewAction = Smartschool_Catalogue_V1_ReviewAction

/// The review workflow (审核): which action moves which status where, and who may take it.
///
/// DRAFT → SUBMITTED (author) → PUBLISHED (reviewer) or REJECTED (reviewer, with a comment);
/// REJECTED → DRAFT (author). The author may withdraw a submission, and author or reviewer
/// may take a published resource back to DRAFT. Only a resource with content is submitted or
/// published, and publishing needs a reviewer whose scope covers the whole sharing reach
/// (``Visibility/canPublish(_:reach:)``).
enum Workflow {
  /// Who takes an action.
  enum Actor: Hashable, Sendable {
    /// The resource's author.
    case author
    /// A resource reviewer whose scope covers the owner (never the author).
    case reviewer
  }

  /// The status an action leads to from `status`, or FAILED_PRECONDITION when the action
  /// does not apply there; INVALID_ARGUMENT for an unknown action or a REJECT without comment.
  static func next(from status: ResourceStatus, action: ReviewAction, comment: String)
    throws(ServiceError) -> ResourceStatus
  {
    let to: ResourceStatus
    let from: ResourceStatus
    switch action {
    case .submit: (from, to) = (.draft, .submitted)
    case .withdraw: (from, to) = (.submitted, .draft)
    case .approve: (from, to) = (.submitted, .published)
    case .reject: (from, to) = (.submitted, .rejected)
    case .revise: (from, to) = (.rejected, .draft)
    case .unpublish: (from, to) = (.published, .draft)
    default: throw .invalid("action", "must be a known review action")
    }
    if action == .reject && comment.trimmingWhitespace().isEmpty {
      throw .invalid("comment", "a rejection needs a comment")
    }
    guard status == from else {
      throw .failedPrecondition(
        "\(name(action)) needs status \(name(from)); the resource is \(name(status))")
    }
    return to
  }

  /// Who may take `action`.
  static func actors(of action: ReviewAction) -> Set<Actor> {
    switch action {
    case .submit, .withdraw, .revise: [.author]
    case .approve, .reject: [.reviewer]
    case .unpublish: [.author, .reviewer]
    default: []
    }
  }

  /// Checks that a caller who is (or is not) the author and is (or is not) a reviewer of the
  /// owner may take `action`: PERMISSION_DENIED otherwise. A reviewer never reviews their
  /// own resource.
  static func authorize(action: ReviewAction, isAuthor: Bool, isReviewer: Bool)
    throws(ServiceError)
  {
    let allowed = actors(of: action)
    if allowed.contains(.author) && isAuthor { return }
    if allowed.contains(.reviewer) && isReviewer && !isAuthor { return }
    if allowed == [.reviewer] && isAuthor {
      throw .permissionDenied("authors may not review their own resources")
    }
    let who =
      allowed.contains(.author)
      ? (allowed.contains(.reviewer) ? "the author or a reviewer of the owner" : "the author")
      : "a resource reviewer whose scope covers the owner"
    throw .permissionDenied("only \(who) may \(name(action))")
  }

  /// True when a resource has content to review and publish: an uploaded blob
  /// (UploadContent) of at least one byte. The model has no external links.
  static func hasContent(_ r: Resource) -> Bool {
    r.hasContent && r.content.sizeBytes > 0
  }

  /// FAILED_PRECONDITION when `action`, leading to `to`, hands on a resource without content:
  /// SUBMIT (to the reviewers) and every action that publishes need it.
  static func checkContent(_ r: Resource, action: ReviewAction, to: ResourceStatus)
    throws(ServiceError)
  {
    guard action == .submit || to == .published, !hasContent(r) else { return }
    throw .failedPrecondition(
      "the resource has no content: only a resource whose content was uploaded "
        + "(UploadContent, at least one byte) can be submitted or published")
  }

  /// Statuses in which the author may change fields and content.
  static func isEditable(_ status: ResourceStatus) -> Bool {
    status == .draft || status == .rejected
  }

  /// Lower-case English name of a status, for messages.
  static func name(_ status: ResourceStatus) -> String {
    switch status {
    case .draft: "draft"
    case .submitted: "submitted"
    case .published: "published"
    case .rejected: "rejected"
    default: "unspecified"
    }
  }

  /// Lower-case English name of an action, for messages.
  static func name(_ action: ReviewAction) -> String {
    switch action {
    case .submit: "submit"
    case .withdraw: "withdraw"
    case .approve: "approve"
    case .reject: "reject"
    case .revise: "revise"
    case .unpublish: "unpublish"
    default: "unspecified"
    }
  }
}
