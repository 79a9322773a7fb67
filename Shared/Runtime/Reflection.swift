import Synchronization
import Foundation
import GRPCCore
import SmartSchoolModel
import SwiftProtobuf

/// The symbol index behind server reflection, built from the descriptor set that the
/// generation script embeds (``smartSchoolDescriptorSetBase64``).
public struct ReflectionIndex: Sendable {
  /// The embedded descriptor set's symbols, decoded and indexed once per process: every host a
  /// process builds shares them (a test process builds hundreds of hosts, and decoding the set
  /// was a seventh of all its work).
  private static let embedded = Result { try DescriptorIndex() }
  private let descriptors: DescriptorIndex
  /// The fully qualified service names the server lists.
  public let services: [String]

  /// Indexes the embedded descriptor set, listing `services`.
  public init(services: [String]) throws {
    descriptors = try Self.embedded.get()
    self.services = services.sorted()
  }

  /// The named file and its transitive imports, serialized, the file first.
  public func fileWithDependencies(_ name: String) -> [Data]? {
    let dependencies = descriptors.dependencies
    guard dependencies[name] != nil else { return nil }
    var order: [String] = []
    var seen: Set<String> = []
    func visit(_ n: String) {
      guard !seen.contains(n), let imports = dependencies[n] else { return }
      seen.insert(n)
      order.append(n)
      for dep in imports { visit(dep) }
    }
    visit(name)
    return order.compactMap { descriptors.serialized[$0] }
  }

  /// The file defining a fully qualified symbol (message, enum, service, method, field).
  public func file(containingSymbol symbol: String) -> String? {
    let s = symbol.hasPrefix(".") ? String(symbol.dropFirst()) : symbol
    return descriptors.symbols[s]
  }

  /// The file defining extension `number` of `type`.
  public func file(containingExtension type: String, number: Int32) -> String? {
    descriptors.extensions[type]?[number]
  }

  /// The extension numbers known for `type`; `nil` when the type is unknown.
  public func extensionNumbers(of type: String) -> [Int32]? {
    guard descriptors.symbols[type] != nil else { return nil }
    return (descriptors.extensions[type].map { Array($0.keys) } ?? []).sorted()
  }
}

/// Each file of the embedded descriptor set (``smartSchoolDescriptorSetBase64``) serialized, with
/// its imports, and where each symbol and extension is defined. The decoded descriptors are not
/// kept: every service holds the whole suite's set, and the trees of small objects were idle
/// memory for nothing.
private struct DescriptorIndex: Sendable {
  var dependencies: [String: [String]] = [:]
  var serialized: [String: Data] = [:]
  var symbols: [String: String] = [:]
  var extensions: [String: [Int32: String]] = [:]

  init() throws {
    guard
      let data = Data(
        base64Encoded: smartSchoolDescriptorSetBase64, options: .ignoreUnknownCharacters)
    else { throw ServiceError.internalError("embedded descriptor set is not base64") }
    let set = try Google_Protobuf_FileDescriptorSet(serializedBytes: data)
    for file in set.file {
      dependencies[file.name] = file.dependency
      serialized[file.name] = try file.serializedData()
      let prefix = file.package.isEmpty ? "" : file.package + "."
      for message in file.messageType { index(message, prefix: prefix, file: file.name) }
      for e in file.enumType { symbols[prefix + e.name] = file.name }
      for service in file.service {
        symbols[prefix + service.name] = file.name
        for m in service.method { symbols[prefix + service.name + "." + m.name] = file.name }
      }
      for ext in file.extension {
        let extendee = ext.extendee.hasPrefix(".") ? String(ext.extendee.dropFirst()) : ext.extendee
        extensions[extendee, default: [:]][ext.number] = file.name
      }
    }
  }

  private mutating func index(
    _ message: Google_Protobuf_DescriptorProto, prefix: String, file: String
  ) {
    let name = prefix + message.name
    symbols[name] = file
    for nested in message.nestedType { index(nested, prefix: name + ".", file: file) }
    for e in message.enumType { symbols[name + "." + e.name] = file }
    for field in message.field { symbols[name + "." + field.name] = file }
  }
}

/// What one reflection request asks for, independent of the protocol version.
enum ReflectionAnswer {
  case files([Data])
  case services([String])
  case extensionNumbers(String, [Int32])
  case error(RPCError.Code, String)
}

extension ReflectionIndex {
  func answer(
    fileByFilename: String?, symbol: String?, extensionOf: (String, Int32)?,
    allExtensionsOf: String?, listServices: Bool
  ) -> ReflectionAnswer {
    if let name = fileByFilename {
      guard let files = fileWithDependencies(name) else {
        return .error(.notFound, "unknown file '\(name)'")
      }
      return .files(files)
    }
    if let symbol {
      guard let name = file(containingSymbol: symbol), let files = fileWithDependencies(name)
      else { return .error(.notFound, "unknown symbol '\(symbol)'") }
      return .files(files)
    }
    if let (type, number) = extensionOf {
      guard let name = file(containingExtension: type, number: number),
        let files = fileWithDependencies(name)
      else { return .error(.notFound, "unknown extension \(number) of '\(type)'") }
      return .files(files)
    }
    if let type = allExtensionsOf {
      guard let numbers = extensionNumbers(of: type) else {
        return .error(.notFound, "unknown type '\(type)'")
      }
      return .extensionNumbers(type, numbers)
    }
    if listServices { return .services(services) }
    return .error(.invalidArgument, "empty reflection request")
  }
}

/// grpc.reflection.v1 ServerReflection (what grpcurl asks first).
public struct ReflectionServiceV1: Grpc_Reflection_V1_ServerReflection.SimpleServiceProtocol {
  let index: ReflectionIndex

  /// Reflection over `index`.
  public init(index: ReflectionIndex) { self.index = index }

  public func serverReflectionInfo(
    request: RPCAsyncSequence<Grpc_Reflection_V1_ServerReflectionRequest, any Error>,
    response: RPCWriter<Grpc_Reflection_V1_ServerReflectionResponse>,
    context: ServerContext
  ) async throws {
    for try await req in request {
      var extensionOf: (String, Int32)? = nil
      if case .fileContainingExtension(let e) = req.messageRequest {
        extensionOf = (e.containingType, e.extensionNumber)
      }
      var fileName: String? = nil
      var symbol: String? = nil
      var allExt: String? = nil
      var list = false
      switch req.messageRequest {
      case .fileByFilename(let f): fileName = f
      case .fileContainingSymbol(let s): symbol = s
      case .allExtensionNumbersOfType(let t): allExt = t
      case .listServices: list = true
      default: break
      }
      let answer = index.answer(
        fileByFilename: fileName, symbol: symbol, extensionOf: extensionOf,
        allExtensionsOf: allExt, listServices: list)
      var out = Grpc_Reflection_V1_ServerReflectionResponse()
      out.validHost = req.host
      out.originalRequest = req
      switch answer {
      case .files(let files): out.fileDescriptorResponse = .with { $0.fileDescriptorProto = files }
      case .services(let names):
        out.listServicesResponse = .with { r in
          r.service = names.map { n in .with { $0.name = n } }
        }
      case .extensionNumbers(let type, let numbers):
        out.allExtensionNumbersResponse = .with {
          $0.baseTypeName = type
          $0.extensionNumber = numbers
        }
      case .error(let code, let message):
        out.errorResponse = .with {
          $0.errorCode = Int32(code.rawValue)
          $0.errorMessage = message
        }
      }
      try await response.write(out)
    }
  }
}

/// grpc.reflection.v1alpha ServerReflection (what Python's grpcio-reflection client speaks).
public struct ReflectionServiceV1Alpha:
  Grpc_Reflection_V1alpha_ServerReflection.SimpleServiceProtocol
{
  let index: ReflectionIndex

  /// Reflection over `index`.
  public init(index: ReflectionIndex) { self.index = index }

  public func serverReflectionInfo(
    request: RPCAsyncSequence<Grpc_Reflection_V1alpha_ServerReflectionRequest, any Error>,
    response: RPCWriter<Grpc_Reflection_V1alpha_ServerReflectionResponse>,
    context: ServerContext
  ) async throws {
    // Same messages on the wire as v1: translate through the serialized form.
    for try await req in request {
      let v1Request = try Grpc_Reflection_V1_ServerReflectionRequest(
        serializedBytes: try req.serializedData())
      let single = RPCAsyncSequence<Grpc_Reflection_V1_ServerReflectionRequest, any Error>(
        wrapping: AsyncThrowingStream { c in
          c.yield(v1Request)
          c.finish()
        })
      let collector = Collector()
      let writer = RPCWriter(wrapping: collector)
      try await ReflectionServiceV1(index: index).serverReflectionInfo(
        request: single, response: writer, context: context)
      for message in collector.messages.withLock({ $0 }) {
        try await response.write(
          try Grpc_Reflection_V1alpha_ServerReflectionResponse(
            serializedBytes: try message.serializedData()))
      }
    }
  }

  private final class Collector: RPCWriterProtocol, Sendable {
    let messages = Synchronization.Mutex<[Grpc_Reflection_V1_ServerReflectionResponse]>([])
    func write(_ element: Grpc_Reflection_V1_ServerReflectionResponse) async throws {
      messages.withLock { $0.append(element) }
    }
    func write(contentsOf elements: some Sequence<Grpc_Reflection_V1_ServerReflectionResponse>)
      async throws
    {
      messages.withLock { $0.append(contentsOf: elements) }
    }
  }
}
