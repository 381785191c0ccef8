import ArgumentParser
import Foundation

@main
struct VitMSN: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vitmsn",
        abstract: "ViT-MSN in Swift: run, convert and benchmark Transformers-compatible ViT-MSN models.",
        subcommands: [Forward.self, Convert.self, Bench.self]
    )
}

/// A failure the CLI reports as `Error: <message>` with a non-zero exit.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func warn(_ message: String) {
    FileHandle.standardError.write(Data("warning: \(message)\n".utf8))
}
