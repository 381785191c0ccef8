import ArgumentParser
import ViTIO
import Foundation
import ViTCore
import ViTHub
import ViTModel

@main
struct VitMSN: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vitmsn",
        abstract: "ViT-MSN in Swift: run, convert, benchmark and fine-tune Transformers-compatible ViT-MSN models.",
        version: "0.9.0",
        subcommands: [Forward.self, Preprocess.self, Classify.self, Embed.self, Serve.self, Convert.self, Info.self, Download.self, Bench.self, Init.self, FineTune.self, Pretrain.self, MSNStep.self, LowShotCommand.self, Attention.self]
    )
}

/// A failure the CLI reports as `Error: <message>` with a non-zero exit.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A command's line about what it wrote to `output`: on stdout, or on stderr when the data itself is a
/// stream there (`--output -`, `/dev/stdout`).
func status(_ message: String, writing output: String) {
    if isStream(output) { warn(message) } else { print(message) }
}

func warn(_ message: String) {
    FileHandle.standardError.write(Data("warning: \(message)\n".utf8))
}

/// `--threads N`, shared by every command that runs the model.
struct ThreadOptions: ParsableArguments {
    @Option(help: "Cores to use (default: all).") var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    var parallelism: Parallelism { threads.map { Parallelism(threads: $0) } ?? Parallelism() }
}

/// `--model DIR|ID [--revision R]`: a model directory, or a model id found in the Hugging Face cache.
extension WeightPrecision: ExpressibleByArgument {}

/// `--dtype`, for the commands that run a model.
struct PrecisionOptions: ParsableArguments {
    @Option(help: "Weights: f32, bf16 or f16 (rounded to half precision, computed in f32), or int8 (dynamic quantisation of the patch embedding and the encoder's Linear layers). An int8 directory runs at int8.")
    var dtype: WeightPrecision = .f32
}

struct ModelOptions: ParsableArguments {
    @Option(help: "Model directory, or a model id (org/name) in the Hugging Face cache.") var model: String
    @Option(help: "Branch, tag or commit of a model id (default main).") var revision: String?

    func directory() throws -> String { try HubCache().resolve(model, revision: revision) }
}
