import Foundation
import ViTCore
import ViTIO

/// Transformers' `ViTImageProcessor` (4.57, the PIL path), read from `preprocessor_config.json` in its legacy
/// form (`"size": 224`, `feature_extractor_type`) or its current one (`"size": {"height": …, "width": …}`).
public struct ImageProcessor: Sendable, Codable {
    public var doResize = true
    public var height = 224
    public var width = 224
    public var resample = Resampling.bilinear
    public var doRescale = true
    public var rescaleFactor = 1.0 / 255.0
    public var doNormalize = true
    public var imageMean: [Float] = [0.5, 0.5, 0.5]
    public var imageStd: [Float] = [0.5, 0.5, 0.5]
    /// `nil` as in Transformers: images must already be RGB. `true`: Pillow's `convert("RGB")` first.
    public var doConvertRGB: Bool?

    public init() {}

    /// ViT's defaults (0.5 mean and std, bilinear) at `height` × `width`: what a model without a saved
    /// processor gets.
    public init(height: Int, width: Int) { (self.height, self.width) = (height, width) }

    /// The processor saved with a model (`DIR/preprocessor_config.json`).
    public static func load(modelDirectory directory: String) throws -> ImageProcessor {
        let path = directory + "/preprocessor_config.json"
        guard FileManager.default.fileExists(atPath: path) else {
            throw ImageError(directory, "no preprocessor_config.json in the model directory")
        }
        return try load(path: path)
    }

    public static func load(path: String) throws -> ImageProcessor {
        do {
            return try decodeConfigFile(ImageProcessor.self, path: path)
        } catch let error as CheckpointError {
            throw ImageError(path, error.reason)
        }
    }

    /// The processor in `json`, the text of a `preprocessor_config.json`.
    public init(json: Data) throws {
        do {
            self = try decodeConfig(ImageProcessor.self, json: json, path: "preprocessor_config.json")
        } catch let error as CheckpointError {
            throw ImageError(error.path, error.reason)
        }
    }

    /// Writes `DIR/preprocessor_config.json` (what `ViTImageProcessor.save_pretrained` writes), atomically.
    public func save(modelDirectory directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: directory + "/preprocessor_config.json"), options: .atomic)
    }

    /// The resized uint8 image this processor feeds to rescale and normalise.
    public func resizedImage(_ image: Image) throws -> Image {
        var image = image
        if image.mode != .RGB {
            guard doConvertRGB == true else {
                // Transformers 4.57 without do_convert_rgb, on what np.array(pil_image) gives for the mode.
                throw ImageError("image", image.mode == .L
                    ? "Unsupported number of image dimensions: 2"
                    : "Unable to infer channel dimension format (\(image.mode.rawValue) image; convert it to RGB first)")
            }
            image = image.converted(toRGBWith: .drop)
        }
        return doResize ? image.resized(width: width, height: height, resample: resample) : image
    }

    /// `pixel_values` of one image: (3, H, W) Float32, exactly as the Python processor computes them.
    public func pixelValues(_ image: Image) throws -> Tensor {
        normalized(try resizedImage(image))
    }

    /// Rescaled and normalised values (C, H, W) of an L or RGB image as it is: float64 rescale, then float32
    /// `(x − mean) / std` per channel (a one-channel image uses the first mean and std).
    public func normalized(_ image: Image) -> Tensor {
        precondition(image.mode == .L || image.mode == .RGB, "normalising needs an L or RGB image, not \(image.mode)")
        let (h, w, channels) = (image.height, image.width, image.mode.channels)
        var values = Tensor(zeros: [channels, h, w])
        let rescaled: [Float] = (0..<256).map { doRescale ? Float(Double($0) * rescaleFactor) : Float($0) }
        values.withUnsafeMutableBufferPointer { out in
            for c in 0..<channels {
                let (mean, std) = (imageMean[c], imageStd[c])
                for i in 0..<(h * w) {
                    let x = rescaled[Int(image.pixels[i * channels + c])]
                    out[c * h * w + i] = doNormalize ? (x - mean) / std : x
                }
            }
        }
        return values
    }

    /// `pixel_values` (channels, H, W) for a model with `channels` input channels: 3 as above, or 1 for a
    /// one-channel model, whose processor implies gray input: the image in Pillow's `convert("L")`, resized
    /// and normalised with the first mean and std. (Transformers' own processor refuses the 2-D arrays that
    /// gray images become, so a one-channel model takes tensors there.)
    public func pixelValues(_ image: Image, channels: Int) throws -> Tensor {
        guard channels == 1 else { return try pixelValues(image) }
        let gray = image.mode == .L ? image : image.convertedToGrayscale()
        return normalized(doResize ? gray.resized(width: width, height: height, resample: resample) : gray)
    }

    /// A batch (B, 3, H, W) from images of any size (each is resized to the processor's size).
    public func pixelValues(_ images: [Image]) throws -> Tensor {
        images.isEmpty ? Tensor(zeros: [0, 3, height, width]) : Tensor.stacked(try images.map(pixelValues))
    }
}

extension ImageProcessor {
    private enum CodingKeys: String, CodingKey {
        case imageProcessorType = "image_processor_type", doResize = "do_resize", size, resample, doRescale = "do_rescale"
        case rescaleFactor = "rescale_factor", doNormalize = "do_normalize", imageMean = "image_mean", imageStd = "image_std"
        case doConvertRGB = "do_convert_rgb"
    }

    private struct Size: Codable { var height, width: Int }

    /// Strict, as every config reader here: `1` is not `true`, and `3.7` is not an integer. Unknown keys
    /// (`feature_extractor_type`, `crop_size`, …) are ignored, as Transformers ignores them.
    public init(from decoder: Decoder) throws {
        let json = try decoder.container(keyedBy: CodingKeys.self)
        doResize = try json.decodeIfPresent(Bool.self, forKey: .doResize) ?? doResize
        doRescale = try json.decodeIfPresent(Bool.self, forKey: .doRescale) ?? doRescale
        doNormalize = try json.decodeIfPresent(Bool.self, forKey: .doNormalize) ?? doNormalize
        doConvertRGB = try json.decodeIfPresent(Bool.self, forKey: .doConvertRGB)
        rescaleFactor = try json.number(.rescaleFactor) ?? rescaleFactor
        imageMean = try json.numbers(.imageMean, broadcastTo: 3)?.map(Float.init) ?? imageMean
        imageStd = try json.numbers(.imageStd, broadcastTo: 3)?.map(Float.init) ?? imageStd
        if let code = try json.integer(.resample) {
            guard let filter = Resampling(rawValue: code) else { throw json.invalid(.resample, "\(code), and Pillow's filters are 0–5") }
            resample = filter
        }
        if json.contains(.size), try !json.decodeNil(forKey: .size) {
            if let side = try? json.integer(.size) {
                (height, width) = (side, side)
            } else if let size = try? json.decode(Size.self, forKey: .size) {
                (height, width) = (size.height, size.width)
            } else {
                throw json.invalid(.size, "The `size` dictionary must contain the keys `height` and `width`")
            }
        }
        guard height > 0, width > 0 else { throw json.invalid(.size, "size must be positive, got \(height)×\(width)") }
        // Resizing to it allocates the pixels: held to the limit that decoding holds images to.
        let (pixels, overflow) = height.multipliedReportingOverflow(by: width)
        guard !overflow, pixels <= 2 * ImageDecoder.defaultMaxPixels else {
            throw json.invalid(.size, "\(height)×\(width) is above the \(2 * ImageDecoder.defaultMaxPixels)-pixel limit images are held to")
        }
        guard imageMean.count == 3, !imageStd.contains(0), imageStd.count == 3 else {
            throw json.invalid(.imageStd, "image_mean and image_std need three values (std non-zero)")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var json = encoder.container(keyedBy: CodingKeys.self)
        try json.encode("ViTImageProcessor", forKey: .imageProcessorType)
        try json.encode(doResize, forKey: .doResize)
        try json.encode(Size(height: height, width: width), forKey: .size)
        try json.encode(resample.rawValue, forKey: .resample)
        try json.encode(doRescale, forKey: .doRescale)
        try json.encode(rescaleFactor, forKey: .rescaleFactor)
        try json.encode(doNormalize, forKey: .doNormalize)
        try json.encode(imageMean, forKey: .imageMean)
        try json.encode(imageStd, forKey: .imageStd)
        try json.encodeIfPresent(doConvertRGB, forKey: .doConvertRGB)
    }
}
