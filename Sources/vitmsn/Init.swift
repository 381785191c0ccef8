import ArgumentParser
import Foundation
import ViTModel
import ViTMSN
import ViTVision

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a randomly initialised ViTMSNModel directory of a preset shape (to train from scratch).")

    @Option(help: "Shape: \(ViTMSNConfig.presetNames.joined(separator: ", ")).") var preset: String
    @Option(help: "The model directory to create.") var output: String
    @Option var seed: UInt64 = 0

    func run() throws {
        guard !FileManager.default.fileExists(atPath: output) else { throw CLIError("\(output) already exists") }
        let config = try ViTMSNConfig.preset(preset)
        try ViTMSNModel.randomlyInitialized(config: config, seed: seed).save(directory: output)
        try ImageProcessor(for: config).save(modelDirectory: output)
        print("wrote \(output): \(preset) shape, \(config.numChannels) channel(s), \(config.imageSize.height)×\(config.imageSize.width) images")
    }
}
