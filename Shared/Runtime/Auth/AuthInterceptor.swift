import GRPCCore

/// Rejects every RPC without a valid bearer token (UNAUTHENTICATED) except the open methods:
/// health, reflection and whatever the service lists (identity's login family and key
/// publication). The check runs before the handler decodes or validates the request.
///
/// The verified ``Principal`` is bound to ``Principal/current`` for the whole call, including
/// the body of a server-streaming response.
public struct AuthInterceptor: ServerInterceptor {
  private let verifier: TokenVerifier
  private let openMethods: Set<String>
  private static let alwaysOpenServices: Set<String> = [
    "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
  ]

  /// An interceptor verifying with `verifier`; `openMethods` are fully qualified method names
  /// (`package.Service/Method`) callable without a token.
  public init(verifier: TokenVerifier, openMethods: Set<String>) {
    self.verifier = verifier
    self.openMethods = openMethods
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

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws ->
      StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let method = context.descriptor
    if AuthInterceptor.alwaysOpenServices.contains(method.service.fullyQualifiedService)
      || openMethods.contains(method.fullyQualifiedMethod)
    {
      return try await next(request, context)
    }
    guard let token = AuthInterceptor.bearerToken(in: request.metadata) else {
      throw ServiceError.unauthenticated(
        "missing access token: send 'authorization: Bearer <token>' (see identity Login)")
    }
    let principal = try await verifier.verify(token)
    RequestInfo.current?.setPrincipal(principal.userID)
    var response = try await Principal.$current.withValue(principal) {
      try await next(request, context)
    }
    if case .success(var contents) = response.accepted {
      let producer = contents.producer
      contents.producer = { writer in
        try await Principal.$current.withValue(principal) { try await producer(writer) }
      }
      response.accepted = .success(contents)
    }
    return response
  }
}
