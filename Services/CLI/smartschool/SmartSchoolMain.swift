import SmartSchoolCLI

/// The `smartschool` executable: hands the arguments to the command tree.
@main
struct SmartSchoolMain {
  static func main() async {
    await SmartSchoolCommand.main()
  }
}
