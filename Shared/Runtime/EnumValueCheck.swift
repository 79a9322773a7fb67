import Foundation
import GRPCCore
import SmartSchoolModel
import SwiftProtobuf
import Synchronization

/// Refuses request messages that hold an enum value their schema does not name.
///
/// Proto3 enums are open: a number the receiver does not know decodes as the enum's
/// `UNRECOGNIZED` case instead of failing, and a handler comparing it with known cases reads it
/// as "no filter" or "something else" (`ListRoleBindings(role=99)` listed every binding). This
/// check walks every request message before a handler sees it and answers INVALID_ARGUMENT
/// with a google.rpc.BadRequest field violation per unknown value, naming the field by its
/// proto path: `role`, `org.school_kind`, `org.stages[1]`, `fields["a"].null_value`.
///
/// What to walk comes from the descriptor set, once: for each message type, the enum fields
/// and the message (and map) fields under which an enum lies somewhere. Types with no enum
/// beneath them are never walked, and a walk descends only into fields that can hold one.
/// Measured in a release build (a request's message sequence read as a unary handler reads
/// it): a type without enums costs one lookup in a table keyed by the Swift type, about 40 ns,
/// not measurable beside the rest; `ListRoleBindingsRequest` about 1.3 µs and a `CreateOrg`
/// (nested org, repeated stages) about 2.5 µs, mostly the extra async sequence layer and
/// generic metadata lookups of unspecialised code.
///
/// A message of a client-streaming call is checked as the handler reads it, so an import fails
/// at its first bad row (rows of batches committed before it stay committed; imports are
/// idempotent); the violation's description names the message's index in the stream.
public final class EnumValueCheck: Sendable {
  /// The check of every message in the suite's embedded descriptor set, shared by all services.
  public static let suite: EnumValueCheck = {
    guard
      let data = Data(
        base64Encoded: smartSchoolDescriptorSetBase64, options: .ignoreUnknownCharacters),
      let set = try? Google_Protobuf_FileDescriptorSet(serializedBytes: data)
    else { fatalError("the embedded descriptor set does not decode") }
    return EnumValueCheck(descriptorSet: set)
  }()

  /// The most violations reported for one message; the last slot says that more were left out.
  public static let reportLimit = 10

  /// Walk plans by fully qualified message name, only for types with an enum beneath them.
  private let plans: [String: MessagePlan]
  /// Types that are the request of a client-streaming method.
  private let streamedTypes: Set<String>
  /// What each Swift request type met so far needs: its walker, or nil for nothing to walk.
  private let walkers = Mutex<[ObjectIdentifier: (any RequestWalking)?]>([:])

  /// A check of the messages described in `descriptorSet` (with their imports).
  public init(descriptorSet: Google_Protobuf_FileDescriptorSet) {
    var messages: [String: Google_Protobuf_DescriptorProto] = [:]
    var enums: [String: EnumValues] = [:]
    var streamed: Set<String> = []
    func collect(_ message: Google_Protobuf_DescriptorProto, prefix: String) {
      let name = prefix + message.name
      messages[name] = message
      for e in message.enumType { enums[name + "." + e.name] = EnumValues(name + "." + e.name, e) }
      for nested in message.nestedType { collect(nested, prefix: name + ".") }
    }
    for file in descriptorSet.file {
      let prefix = file.package.isEmpty ? "" : file.package + "."
      for message in file.messageType { collect(message, prefix: prefix) }
      for e in file.enumType { enums[prefix + e.name] = EnumValues(prefix + e.name, e) }
      for service in file.service {
        for method in service.method where method.clientStreaming {
          streamed.insert(EnumValueCheck.symbol(method.inputType))
        }
      }
    }

    // The types with an enum beneath them: those with an enum field, then, until nothing
    // changes, those with a message field (a map is a repeated entry message) of such a type.
    // Iterating to a fixed point handles recursive types.
    func isMessage(_ field: Google_Protobuf_FieldDescriptorProto) -> Bool {
      field.type == .message || field.type == .group
    }
    var holding = Set(messages.filter { $0.value.field.contains { $0.type == .enum } }.keys)
    var changed = true
    while changed {
      changed = false
      for (name, message) in messages where !holding.contains(name) {
        if message.field.contains(where: {
          isMessage($0) && holding.contains(EnumValueCheck.symbol($0.typeName))
        }) {
          holding.insert(name)
          changed = true
        }
      }
    }

    var plans: [String: MessagePlan] = [:]
    for name in holding { plans[name] = MessagePlan() }
    for name in holding {
      guard let message = messages[name], let plan = plans[name] else { continue }
      for field in message.field {
        var target = EnumValueCheck.symbol(field.typeName)
        var type = field.type
        // A map field's walk is decided by its entry's value (field 2).
        if isMessage(field), let entry = messages[target], entry.options.mapEntry,
          let value = entry.field.first(where: { $0.number == 2 })
        {
          target = EnumValueCheck.symbol(value.typeName)
          type = value.type
        }
        if type == .enum, let values = enums[target] {
          plan[Int(field.number)] = FieldPlan(name: field.name, kind: .enumeration(values))
        } else if type == .message || type == .group, let nested = plans[target] {
          plan[Int(field.number)] = FieldPlan(name: field.name, kind: .message(nested))
        }
      }
    }
    self.plans = plans
    self.streamedTypes = streamed
  }

  /// A descriptor's type reference (".pkg.Name") as a fully qualified name ("pkg.Name").
  private static func symbol(_ reference: String) -> String {
    reference.hasPrefix(".") ? String(reference.dropFirst()) : reference
  }

  /// Whether messages of `type` are walked: a generated message type with an enum somewhere
  /// beneath it.
  public func walks(_ type: Any.Type) -> Bool { walker(for: type) != nil }

  /// The unknown enum values in `message`, by proto field path; `streamIndex` (the message's
  /// index in a client stream) is named in each description. At most ``reportLimit``.
  public func violations<M: Message>(in message: M, streamIndex: Int? = nil) -> [FieldViolation] {
    guard let plan = plans[M.protoMessageName] else { return [] }
    return EnumValueCheck.walk(message, plan: plan, streamIndex: streamIndex)
  }

  /// `request` with each of its messages checked as it is read: a message holding an unknown
  /// enum value ends the call with INVALID_ARGUMENT. Requests of types that cannot hold an enum
  /// are returned as they are.
  public func checked<Input: Sendable>(
    _ request: StreamingServerRequest<Input>
  ) -> StreamingServerRequest<Input> {
    guard let walker = walker(for: Input.self) else { return request }
    var request = request
    request.messages = RPCAsyncSequence(
      wrapping: EnumCheckedMessages(base: request.messages, walker: walker))
    return request
  }

  private func walker(for type: Any.Type) -> (any RequestWalking)? {
    let id = ObjectIdentifier(type)
    if let known = walkers.withLock({ $0[id] }) { return known }
    var made: (any RequestWalking)?
    if let messageType = type as? any Message.Type,
      let plan = plans[messageType.protoMessageName]
    {
      let streamed = streamedTypes.contains(messageType.protoMessageName)
      func make<M: Message>(_: M.Type) -> any RequestWalking {
        TypedWalker<M>(plan: plan, streamed: streamed)
      }
      made = make(messageType)
    }
    walkers.withLock { $0[id] = made }
    return made
  }

  fileprivate static func walk<M: Message>(
    _ message: M, plan: MessagePlan, streamIndex: Int?
  ) -> [FieldViolation] {
    var walker = UnknownEnumFinder(plan: plan, streamIndex: streamIndex)
    do {
      try message.traverse(visitor: &walker)
    } catch {
      // UnknownEnumFinder.Full: the report is full; the walker throws nothing else.
    }
    return walker.found
  }
}

/// The valid numbers of one enum.
struct EnumValues: Sendable {
  /// Fully qualified enum name, for messages.
  let name: String
  /// The numbers when they form one run (the usual case), checked without hashing.
  let run: ClosedRange<Int>?
  let numbers: Set<Int>

  init(_ name: String, _ descriptor: Google_Protobuf_EnumDescriptorProto) {
    self.name = name
    numbers = Set(descriptor.value.map { Int($0.number) })
    if let low = numbers.min(), let high = numbers.max(), high - low + 1 == numbers.count {
      run = low...high
    } else {
      run = nil
    }
  }

  func contains(_ number: Int) -> Bool {
    if let run { return run.contains(number) }
    return numbers.contains(number)
  }
}

/// What to look at in one message type: its fields that are enums or can hold one, by number.
/// Filled once while the check is built (plans of recursive types refer to each other), then
/// only read.
final class MessagePlan: @unchecked Sendable {
  /// Fields numbered below ``direct`` (nearly all), by number, without hashing.
  private var slots: [FieldPlan?] = []
  private var others: [Int: FieldPlan] = [:]
  private static let direct = 256

  subscript(number: Int) -> FieldPlan? {
    get {
      if number >= 0 && number < slots.count { return slots[number] }
      return number < MessagePlan.direct ? nil : others[number]
    }
    set {
      if number >= 0 && number < MessagePlan.direct {
        if slots.count <= number { slots += Array(repeating: nil, count: number + 1 - slots.count) }
        slots[number] = newValue
      } else {
        others[number] = newValue
      }
    }
  }
}

/// One field worth walking; for a map field, the kind is its values'. A class: a lookup
/// retains one object rather than each string and set inside.
final class FieldPlan: Sendable {
  enum Kind: Sendable {
    case enumeration(EnumValues)
    case message(MessagePlan)
  }
  /// The proto (snake_case) name.
  let name: String
  let kind: Kind

  init(name: String, kind: Kind) {
    self.name = name
    self.kind = kind
  }
}

/// Checks the messages of one request type. Walkers are made once per type, so the Swift type
/// is opened from `any Message.Type` once, not on every message.
protocol RequestWalking: Sendable {
  func violations<T>(in message: T, index: Int) -> [FieldViolation]
}

private struct TypedWalker<M: Message>: RequestWalking {
  let plan: MessagePlan
  let streamed: Bool

  func violations<T>(in message: T, index: Int) -> [FieldViolation] {
    // T is M (the walker was made for this type), so the cast is a copy.
    guard let message = message as? M else { return [] }
    return EnumValueCheck.walk(message, plan: plan, streamIndex: streamed ? index : nil)
  }
}

/// A request's messages, each checked as the handler reads it.
private struct EnumCheckedMessages<Input: Sendable>: AsyncSequence, Sendable {
  typealias Element = Input
  typealias Failure = any Error

  let base: RPCAsyncSequence<Input, any Error>
  let walker: any RequestWalking

  func makeAsyncIterator() -> AsyncIterator {
    AsyncIterator(base: base.makeAsyncIterator(), walker: walker)
  }

  struct AsyncIterator: AsyncIteratorProtocol {
    var base: RPCAsyncSequence<Input, any Error>.AsyncIterator
    let walker: any RequestWalking
    var index = 0

    init(base: RPCAsyncSequence<Input, any Error>.AsyncIterator, walker: any RequestWalking) {
      self.base = base
      self.walker = walker
    }

    mutating func next(isolation actor: isolated (any Actor)?) async throws(any Error) -> Input? {
      guard let message = try await base.next(isolation: actor) else { return nil }
      let violations = walker.violations(in: message, index: index)
      index += 1
      if !violations.isEmpty { throw ServiceError.invalidArgument(violations).rpcError }
      return message
    }

    mutating func next() async throws -> Input? {
      try await next(isolation: nil)
    }
  }
}

/// A SwiftProtobuf visitor that records enum values without a name, descending only into
/// fields its plan marks. It keeps the path as a stack of parts and writes a path out only
/// for a violation.
private struct UnknownEnumFinder: Visitor {
  /// Thrown to stop the walk once the report is full.
  struct Full: Error {}

  private enum Part {
    case field(String)
    case index(Int)
    case key(String)
  }

  private var plan: MessagePlan
  private var path: [Part] = []
  private let streamIndex: Int?
  private(set) var found: [FieldViolation] = []

  init(plan: MessagePlan, streamIndex: Int?) {
    self.plan = plan
    self.streamIndex = streamIndex
  }

  private mutating func check(
    _ number: Int, _ values: EnumValues, field: String, _ last: Part? = nil
  ) throws {
    if values.contains(number) { return }
    if found.count == EnumValueCheck.reportLimit - 1 {
      found.append(FieldViolation("…", "further unknown enum values are not listed"))
      throw Full()
    }
    var text = ""
    for part in path + [.field(field)] + (last.map { [$0] } ?? []) {
      switch part {
      case .field(let name): text += text.isEmpty ? name : "." + name
      case .index(let i): text += "[\(i)]"
      case .key(let key): text += "[\(key)]"
      }
    }
    var description = "unknown value \(number) of enum \(values.name)"
    if let streamIndex { description += " (in message \(streamIndex) of the stream)" }
    found.append(FieldViolation(text, description))
  }

  /// Walks `message`, the value of field `name` (at `part`, for repeated and map fields),
  /// with `nested` as the plan.
  private mutating func descend<M: Message>(
    _ message: M, _ nested: MessagePlan, _ name: String, _ part: Part? = nil
  ) throws {
    let outer = plan
    let depth = path.count
    plan = nested
    path.append(.field(name))
    if let part { path.append(part) }
    defer {
      plan = outer
      path.removeSubrange(depth...)
    }
    try message.traverse(visitor: &self)
  }

  private static func key<K>(_ key: K) -> String {
    (key as? String)?.debugDescription ?? "\(key)"
  }

  mutating func visitSingularEnumField<E: Enum>(value: E, fieldNumber: Int) throws {
    guard let field = plan[fieldNumber], case .enumeration(let values) = field.kind
    else { return }
    try check(value.rawValue, values, field: field.name)
  }

  mutating func visitRepeatedEnumField<E: Enum>(value: [E], fieldNumber: Int) throws {
    guard let field = plan[fieldNumber], case .enumeration(let values) = field.kind
    else { return }
    // Indices rather than enumerated(): this runs unspecialized, and each generic sequence
    // over [E] costs a runtime metadata lookup per call.
    for i in value.indices {
      try check(value[i].rawValue, values, field: field.name, .index(i))
    }
  }

  mutating func visitPackedEnumField<E: Enum>(value: [E], fieldNumber: Int) throws {
    try visitRepeatedEnumField(value: value, fieldNumber: fieldNumber)
  }

  mutating func visitSingularMessageField<M: Message>(value: M, fieldNumber: Int) throws {
    guard let field = plan[fieldNumber], case .message(let nested) = field.kind
    else { return }
    try descend(value, nested, field.name)
  }

  mutating func visitRepeatedMessageField<M: Message>(value: [M], fieldNumber: Int) throws {
    guard let field = plan[fieldNumber], case .message(let nested) = field.kind
    else { return }
    for i in value.indices {
      try descend(value[i], nested, field.name, .index(i))
    }
  }

  mutating func visitMapField<KeyType, ValueType>(
    fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type,
    value: _ProtobufEnumMap<KeyType, ValueType>.BaseType,
    fieldNumber: Int
  ) throws where ValueType.RawValue == Int {
    guard let field = plan[fieldNumber], case .enumeration(let values) = field.kind
    else { return }
    for (key, element) in value {
      try check(element.rawValue, values, field: field.name, .key(Self.key(key)))
    }
  }

  mutating func visitMapField<KeyType, ValueType>(
    fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type,
    value: _ProtobufMessageMap<KeyType, ValueType>.BaseType,
    fieldNumber: Int
  ) throws {
    guard let field = plan[fieldNumber], case .message(let nested) = field.kind
    else { return }
    for (key, element) in value {
      try descend(element, nested, field.name, .key(Self.key(key)))
    }
  }

  // Nothing else can hold an enum.
  mutating func visitMapField<KeyType, ValueType: MapValueType>(
    fieldType: _ProtobufMap<KeyType, ValueType>.Type,
    value: _ProtobufMap<KeyType, ValueType>.BaseType,
    fieldNumber: Int
  ) throws {}
  mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws {}
  mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws {}
  mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws {}
  mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws {}
  mutating func visitSingularStringField(value: String, fieldNumber: Int) throws {}
  mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws {}
  mutating func visitRepeatedStringField(value: [String], fieldNumber: Int) throws {}
  mutating func visitRepeatedBytesField(value: [Data], fieldNumber: Int) throws {}
  // Repeated and packed numbers, skipped whole rather than element by element.
  mutating func visitRepeatedFloatField(value: [Float], fieldNumber: Int) throws {}
  mutating func visitRepeatedDoubleField(value: [Double], fieldNumber: Int) throws {}
  mutating func visitRepeatedInt32Field(value: [Int32], fieldNumber: Int) throws {}
  mutating func visitRepeatedInt64Field(value: [Int64], fieldNumber: Int) throws {}
  mutating func visitRepeatedUInt32Field(value: [UInt32], fieldNumber: Int) throws {}
  mutating func visitRepeatedUInt64Field(value: [UInt64], fieldNumber: Int) throws {}
  mutating func visitRepeatedSInt32Field(value: [Int32], fieldNumber: Int) throws {}
  mutating func visitRepeatedSInt64Field(value: [Int64], fieldNumber: Int) throws {}
  mutating func visitRepeatedFixed32Field(value: [UInt32], fieldNumber: Int) throws {}
  mutating func visitRepeatedFixed64Field(value: [UInt64], fieldNumber: Int) throws {}
  mutating func visitRepeatedSFixed32Field(value: [Int32], fieldNumber: Int) throws {}
  mutating func visitRepeatedSFixed64Field(value: [Int64], fieldNumber: Int) throws {}
  mutating func visitRepeatedBoolField(value: [Bool], fieldNumber: Int) throws {}
  mutating func visitUnknown(bytes: Data) throws {}
}
