import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// A child process started with `posix_spawn`, for tests that run executables.
///
/// Not Foundation's `Process`: on Linux its `run()` (swift-corelibs-foundation up to Swift
/// 6.3.1) lists `/proc/self/fd` to close inherited descriptors and copies each directory entry
/// whole, reading past glibc's buffer; now and then that page is unmapped and the whole test
/// process dies with SIGSEGV (swift-corelibs-foundation #5472). It did so in a full test run
/// here. This starts the child with the descriptors above 2 closed by the C library instead.
public final class ChildProcess: Sendable {
  /// Why a start failed.
  public struct StartError: Error, CustomStringConvertible {
    /// What failed, with the C library's error.
    public let description: String
  }

  /// The child's process id.
  public let pid: pid_t
  /// The wait status once the child has been reaped.
  private let reaped = Mutex<Int32?>(nil)

  /// Starts `executable` with `arguments` and exactly `environment`, in `directory` when given;
  /// standard input is /dev/null, standard output and error go to the files named (created or
  /// truncated), or to /dev/null.
  public init(
    executable: String, arguments: [String], environment: [String: String],
    directory: String? = nil, standardOutput: String? = nil, standardError: String? = nil
  ) throws {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    let write = O_WRONLY | O_CREAT | O_TRUNC
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, standardOutput ?? "/dev/null", write, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, standardError ?? "/dev/null", write, 0o644)
    // glibc's GNU extensions (2.34 and 2.29), which Swift's Glibc module does not declare.
    if let closeFrom = Self.gnu("posix_spawn_file_actions_addclosefrom_np", CloseFrom.self) {
      _ = closeFrom(&actions, 3)
    }
    if let directory {
      guard let chdir = Self.gnu("posix_spawn_file_actions_addchdir_np", ChangeDirectory.self)
      else { throw StartError(description: "this C library cannot start a child in a directory") }
      _ = chdir(&actions, directory)
    }
    // The child starts with no signal blocked and every signal at its default, whatever the
    // spawning thread had: a service must hear SIGTERM.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for p in argv + envp { free(p) } }
    var child: pid_t = 0
    let result = posix_spawn(&child, executable, &actions, &attributes, argv, envp)
    guard result == 0 else {
      throw StartError(
        description: "cannot start \(executable): \(String(cString: strerror(result)))")
    }
    pid = child
  }

  private typealias CloseFrom = @convention(c) (
    UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32
  ) -> Int32
  private typealias ChangeDirectory = @convention(c) (
    UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>
  ) -> Int32

  /// The C library's function `name` as `type`, or nil when it has none.
  private static func gnu<F>(_ name: String, _ type: F.Type) -> F? {
    guard let symbol = dlsym(nil, name) else { return nil }
    return unsafeBitCast(symbol, to: type)
  }

  /// Whether the child has not exited yet (reaps it once it has).
  public var isRunning: Bool { wait(blocking: false) == nil }

  /// Waits for the child to exit.
  public func waitUntilExit() { _ = wait(blocking: true) }

  /// Sends `signal` to the child unless it has been reaped.
  public func send(_ signal: Int32) {
    if isRunning { kill(pid, signal) }
  }

  /// Whether the child exited by itself (false: killed by a signal). After it has exited.
  public var exitedNormally: Bool {
    guard let status = wait(blocking: true) else { return false }
    return status & 0x7f == 0
  }

  /// The exit code, or the signal that ended the child. Waits for the exit.
  public var terminationStatus: Int32 {
    guard let status = wait(blocking: true) else { return -1 }
    return status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
  }

  /// The wait status, once the child has exited; nil while it runs (when not blocking).
  private func wait(blocking: Bool) -> Int32? {
    reaped.withLock { reaped in
      if let status = reaped { return status }
      var status: Int32 = 0
      while true {
        let r = waitpid(pid, &status, blocking ? 0 : WNOHANG)
        if r == pid {
          reaped = status
          return status
        }
        if r == 0 { return nil }
        if errno == EINTR { continue }
        // Not our child any more (never here): report it as gone.
        reaped = 0
        return 0
      }
    }
  }
}
