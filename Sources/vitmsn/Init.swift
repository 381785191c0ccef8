import ArgumentParser
import Foundation
import ViTModel
import ViTMSN
import ViTVision

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a randomly initialised model directory of a preset shape, to train from scratch.",
        discussion: """
            The preset's shape can be changed with --image-size, --patch-size and --num-channels. With \
            --num-labels or --labels the directory holds a ViTMSNForImageClassification (its classifier drawn as \
            Transformers initialises one), else a ViTMSNModel.
            """)

    @Option(help: "Shape: \(ViTMSNConfig.presetNames.joined(separator: ", ")).") var preset: String
    @Option(help: "The model directory to create.") var output: String
    @Option(help: "Input images are this many pixels square (the preset's by default).") var imageSize: Int?
    @Option(help: "Patches are this many pixels square (the preset's by default).") var patchSize: Int?
    @Option(help: "Input channels: 1 (gray) or 3 (RGB).") var numChannels: Int?
    @Option(help: "A classifier with this many labels, named LABEL_0, LABEL_1, ….") var numLabels: Int?
    @Option(help: "A classifier with these labels, comma-separated.") var labels: String?
    @Option(help: "Seed of the random weights.") var seed: UInt64 = 0

    func validate() throws {
        if let numChannels, ![1, 3].contains(numChannels) { throw ValidationError("--num-channels must be 1 or 3, got \(numChannels)") }
        if let numLabels, numLabels < 1 { throw ValidationError("--num-labels must be positive, got \(numLabels)") }
        if numLabels != nil && labels != nil { throw ValidationError("give --num-labels or --labels, not both") }
        if let labels {
            let names = labels.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            if names.contains("") { throw ValidationError("--labels has an empty name: '\(labels)'") }
            if Set(names).count != names.count { throw ValidationError("--labels names a label twice: '\(labels)'") }
        }
    }

    func run() throws {
        guard !FileManager.default.fileExists(atPath: output) else { throw CLIError("\(output) already exists") }
        var config = try ViTMSNConfig.preset(preset)
        if let imageSize { config.imageSize = .square(imageSize) }
        if let patchSize { config.patchSize = .square(patchSize) }
        if let numChannels { config.numChannels = numChannels }
        let names = labels.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        if let names {
            config.id2label = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($0, $1) })
            config.label2id = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
        } else if let numLabels {
            config.setNumLabels(numLabels)
        }
        do { try config.validate() } catch let error as ConfigError { throw CLIError("\(error)") }
        if names != nil || numLabels != nil {
            try ViTMSNForImageClassification.randomlyInitialized(config: config, seed: seed).save(directory: output)
        } else {
            try ViTMSNModel.randomlyInitialized(config: config, seed: seed).save(directory: output)
        }
        try ImageProcessor(for: config).save(modelDirectory: output)
        let head = config.numLabels > 0 && (names != nil || numLabels != nil) ? ", a classifier of \(config.numLabels) labels" : ""
        print("wrote \(output): \(preset) shape, \(config.numChannels) channel(s), \(config.imageSize.height)×\(config.imageSize.width) images, \(config.patchSize.height)×\(config.patchSize.width) patches\(head)")
    }
}
