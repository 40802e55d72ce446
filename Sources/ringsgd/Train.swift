import ArgumentParser
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a model (under mpirun).")
    func run() throws { throw ValidationError("not yet") }
}
