import ArgumentParser
import Foundation
import ViTMSN

struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the top labels of image files with their scores, as Transformers' image-classification pipeline.",
        discussion: "Scores are a softmax for single-label models, a sigmoid for multi-label ones and single outputs (Transformers' default), unless --function-to-apply says otherwise."
    )

    @OptionGroup var modelOptions: ModelOptions
    @Argument(help: "Image files (JPEG, PNG, WebP, GIF, BMP, TIFF).") var images: [String] = []
    @Option(help: "A folder to classify every image (JPEG, PNG, WebP, GIF, BMP, TIFF) below (with a progress bar).") var dir: String?
    @Option(help: "How many labels to print per image.") var topK = 5
    @Option(help: "sigmoid, softmax or none (default: the pipeline's choice for the model).") var functionToApply: String?
    @Option(help: "Images per forward pass.") var batchSize = 8
    @Flag(help: "Print JSON: one array of {image, predictions: [{label, score}]}.") var json = false
    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        guard topK > 0, batchSize > 0 else { throw ValidationError("--top-k and --batch-size must be positive") }
        guard !images.isEmpty || dir != nil else { throw ValidationError("give image files or --dir") }
        if let functionToApply, ClassificationFunction(rawValue: functionToApply) == nil {
            throw ValidationError("--function-to-apply must be sigmoid, softmax or none, got '\(functionToApply)'")
        }
    }

    func run() throws {
        let classify = try ImageClassificationPipeline(
            model: modelOptions.model, revision: modelOptions.revision, precision: precision.dtype, reading: imageOptions.reading, parallelism: threading.parallelism)
        let images = try self.images + (dir.map { try imageFiles(in: $0) } ?? [])
        guard !images.isEmpty else { throw CLIError("\(dir ?? ""): no image files (\(imageExtensionList))") }
        let progress = dir == nil ? nil : ProgressBar(total: images.count, label: "classifying")
        let results = classify(images.map(ImageInput.file), topK: topK, function: functionToApply.flatMap(ClassificationFunction.init),
                               batchSize: batchSize) { progress?.update(done: $0) }
        progress?.finish(done: results.filter { (try? $0.get()) != nil }.count)
        var output: [[String: Any]] = []
        for (path, result) in zip(images, results) {
            let predictions: [Prediction]
            switch result {
            case .success(let ranked): predictions = ranked
            case .failure(let error):
                output.append(["image": path, "error": error.description])
                continue
            }
            // A NaN score (NaN weights) is null in JSON, which has no NaN.
            output.append(["image": path, "predictions": predictions.map { ["label": $0.label, "score": $0.score.isNaN ? NSNull() : Double($0.score)] as [String: Any] }])
            if !json {
                print(path)
                for p in predictions { print(String(format: "  %.4f  %@", p.score, p.label)) }
            }
        }
        if json {
            let data = try JSONSerialization.data(withJSONObject: output, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
        if report(results) { throw ExitCode(1) }
    }
}
