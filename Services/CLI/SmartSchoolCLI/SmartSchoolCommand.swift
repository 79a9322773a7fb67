import ArgumentParser

/// The root of the `smartschool` command tree.
public struct SmartSchoolCommand: AsyncParsableCommand {
  public static let configuration = CommandConfiguration(
    commandName: "smartschool",
    abstract: "Operate the SmartSchool suite: login, import, export, reports, change feeds, demo.")

  public init() {}
}
