import ArgumentParser
import Foundation
import ViTCore
import ViTModel
import ViTTrain
import ViTVision

struct Attention: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw where the CLS token looks: the last layer's attention maps over images, as a PNG.",
        discussion: """
        One row per image: the input at the model's size, the map averaged over heads on top of it, then each \
        head's map (bilinear over the patch grid, each scaled from its minimum to its maximum).
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Argument(help: "Image files (JPEG, PNG, WebP, GIF, BMP, TIFF).") var images: [String] = []
    @Option(help: "Also draw the first N Fashion-MNIST test images.") var fashionMnist = 0
    @Option(help: "PNG file to write.") var output: String
    @Option(help: "Side of each tile in pixels.") var tileSize = 112
    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        guard !images.isEmpty || fashionMnist > 0 else { throw ValidationError("give image files or --fashion-mnist N") }
        guard (16...1024).contains(tileSize) else { throw ValidationError("--tile-size must be between 16 and 1024") }
    }

    func run() throws {
        let directory = try modelOptions.directory()
        let encoder = try AnyViTMSN.load(directory: directory, precision: precision.dtype, warn: warn).backbone
        encoder.parallelism = threading.parallelism
        let config = encoder.config
        let processor = try ImageProcessor.load(modelDirectory: directory)
        let grayscale = config.numChannels == 1
        var inputs = try images.map { path -> Image in
            let image = try ImageDecoder.loadRGB(path: path, applyExifOrientation: !imageOptions.noExifTranspose,
                                                 alpha: AlphaHandling(rawValue: imageOptions.alpha)!, maxPixels: imageOptions.maxPixels, warn: warn)
            return image.resized(width: processor.width, height: processor.height, resample: processor.resample)
        }
        if fashionMnist > 0 {
            let test = try FashionMNIST.load(train: false, grayscale: true)
            inputs += try (0..<min(fashionMnist, test.count)).map { try test.image(at: $0).resized(width: processor.width, height: processor.height, resample: processor.resample) }
        }
        inputs = inputs.map { grayscale ? $0.convertedToGrayscale() : $0.converted(toRGBWith: .drop) }
        let attention = try encoder.clsAttention(pixelValues: Tensor.stacked(inputs.map(processor.normalized)))
        let (heads, patches) = (attention.shape[1], attention.shape[2])
        let (gridHeight, gridWidth) = (processor.height / config.patchSize.height, processor.width / config.patchSize.width)
        guard gridHeight * gridWidth == patches else { throw CLIError("\(patches) patches do not form the \(gridHeight)×\(gridWidth) grid of \(processor.height)×\(processor.width) inputs") }
        let values = attention.scalars
        var figure = AttentionFigure(rows: inputs.enumerated().map { b, image in
            AttentionFigure.Row(image: image, maps: (0..<heads).map { h in Array(values[((b * heads + h) * patches)..<((b * heads + h + 1) * patches)]) },
                                gridHeight: gridHeight, gridWidth: gridWidth)
        })
        figure.tileSize = tileSize
        try figure.rendered().writePNG(to: output)
        print("attention of \(inputs.count) image(s), \(heads) heads on a \(gridHeight)×\(gridWidth) grid, written to \(output)")
    }
}
