import ArgumentParser
import Foundation
import ViTHub
import ViTModel

struct Download: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch a model from the Hugging Face Hub into the standard cache (HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).",
        discussion: "Downloads config.json, preprocessor_config.json and the weights; partial downloads resume; files are checked against the size and SHA-256 the Hub reports and placed atomically. Afterwards the model id works wherever --model is accepted."
    )

    @Argument(help: "Model id, e.g. facebook/vit-msn-small.") var modelID: String
    @Option(help: "Branch, tag or commit.") var revision = "main"

    func run() throws {
        var current: (file: String, bar: ProgressBar)?  // one file at a time; each bar ends its line before the next output
        let snapshot = try HubDownloader().download(modelID, revision: revision) { progress in
            if current?.file != progress.file {
                current?.bar.finish(done: nil)
                current = (progress.file, ProgressBar(total: progress.total, label: progress.file, unit: "B"))
            }
            current?.bar.update(done: progress.received)
        }
        current?.bar.finish(done: nil)
        print("\(modelID)@\(revision): \(snapshot)")
    }
}
