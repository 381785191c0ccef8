import ArgumentParser
import ViTIO
import ViTMSN

struct Preprocess: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write pixel_values for image files exactly as Transformers' ViTImageProcessor computes them.",
        discussion: "OUTPUT holds pixel_values (F32, B×3×H×W) for the images that could be read, and input_index (I64 [B]) saying which argument each row came from."
    )

    @OptionGroup var modelOptions: ModelOptions
    @Argument(help: "Image files (JPEG, PNG, WebP, GIF, BMP, TIFF).") var images: [String]
    @Option(help: "Safetensors file to write.") var output: String
    @OptionGroup var imageOptions: ImageOptions

    func run() throws {
        let processor = try ImageProcessor.load(modelDirectory: modelOptions.directory())
        let results = imageOptions.reading.pixelValues(images.map(ImageInput.file), processor: processor)
        let good = results.enumerated().compactMap { i, r in (try? r.get()).map { (i, $0) } }
        let failed = report(results)
        guard !good.isEmpty else { throw ExitCode(1) }
        try SafetensorsWriter.write([
            SafetensorsRecord(name: "pixel_values", tensor: Tensor.stacked(good.map(\.1))),
            SafetensorsRecord(name: "input_index", int64: good.map { Int64($0.0) }, shape: [good.count]),
        ], to: output)
        status("wrote pixel_values \([good.count, 3, processor.height, processor.width]) to \(output)", writing: output)
        if failed { throw ExitCode(1) }
    }
}
