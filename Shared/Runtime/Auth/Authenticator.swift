import GRPCCore

/// Decides who is calling. Every RPC needs a valid bearer token (UNAUTHENTICATED otherwise)
/// except the open methods: health, reflection and whatever the service lists (identity's
/// login family and key publication).
///
/// ``CallInterceptor`` asks it before the handler decodes or validates the request, and binds
/// the principal to ``Principal/current`` for the whole call.
public struct Authenticator: Sendable {
  private let verifier: TokenVerifier
  private let openMethods: Set<String>
  private let audience: String?
  private static let alwaysOpenServices: Set<String> = [
    "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
  ]

  /// An authenticator verifying with `verifier`; `openMethods` are fully qualified method
  /// names (`package.Service/Method`) callable without a token. With `audience` (the
  /// service's name, one of ``smartSchoolServices``), a token whose audience is present and
  /// does not name it is refused.
  public init(verifier: TokenVerifier, openMethods: Set<String>, audience: String? = nil) {
    self.verifier = verifier
    self.openMethods = openMethods
    self.audience = audience
  }

  /// Extracts the token of an `authorization: Bearer <token>` header.
  /// Works on the UTF-8 bytes: it runs on every call, and Foundation's trimming went through
  /// NSString and cost a tenth of a busy service's CPU.
  public static func bearerToken(in metadata: Metadata) -> String? {
    for value in metadata[stringValues: "authorization"] {
      let bytes = Array(value.utf8)
      let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 }
      guard var start = bytes.firstIndex(where: { !isSpace($0) }),
        var end = bytes.lastIndex(where: { !isSpace($0) })
      else { continue }
      end += 1
      let scheme = Array("bearer ".utf8)
      guard end - start > scheme.count,
        zip(bytes[start..<(start + scheme.count)], scheme).allSatisfy({ $0 | 0x20 == $1 | 0x20 })
      else { continue }
      start += scheme.count
      while start < end, isSpace(bytes[start]) { start += 1 }
      if start < end { return String(decoding: bytes[start..<end], as: UTF8.self) }
    }
    return nil
  }

  /// The verified caller of `method`, or nil when the method is open; UNAUTHENTICATED, saying
  /// why, when the token is missing or not valid; UNAVAILABLE when its key could not be fetched.
  public func principal(for method: MethodDescriptor, metadata: Metadata)
    async throws(ServiceError) -> Principal?
  {
    if Authenticator.alwaysOpenServices.contains(method.service.fullyQualifiedService)
      || openMethods.contains(method.fullyQualifiedMethod)
    {
      return nil
    }
    guard let token = Authenticator.bearerToken(in: metadata) else {
      throw .unauthenticated(
        "missing access token: send 'authorization: Bearer <token>' (see identity Login)")
    }
    let principal = try await verifier.verify(token)
    if let audience, !principal.mayBeUsed(at: audience) {
      let named = principal.audience?.joined(separator: ", ") ?? ""
      throw .unauthenticated(
        "access token is not for \(audience): its audience is [\(named)]; ask identity for a "
          + "token whose audience includes \(audience)")
    }
    return principal
  }
}
