import Foundation
import ViTCore
import ViTIO

/// Transformers' `ViTImageProcessor` (4.57, the PIL path), read from `preprocessor_config.json` in its legacy
/// form (`"size": 224`, `feature_extractor_type`) or its current one (`"size": {"height": …, "width": …}`).
public struct ImageProcessor: Sendable {
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
        guard let data = FileManager.default.contents(atPath: path),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { throw ImageError(path, "not a readable JSON object") }
        do {
            return try ImageProcessor(json: json)
        } catch let error as ImageError {
            throw ImageError(path, error.reason)
        }
    }

    public init(json: [String: Any]) throws {
        func field<T>(_ key: String, _ read: (Any) -> T?) throws -> T? {
            guard let value = json[key], !(value is NSNull) else { return nil }
            guard let typed = read(value) else { throw ImageError("preprocessor_config.json", "field '\(key)' has the wrong type (\(value))") }
            return typed
        }
        // Strict, as every config reader here: `1` is not `true`, and `3.7` is not an integer.
        let (bool, number, integer) = (jsonBool, jsonNumber, jsonInteger)
        func floats(_ v: Any) -> [Float]? {
            if let n = number(v) { return [Float(n), Float(n), Float(n)] }
            guard let list = v as? [Any] else { return nil }
            let values = list.compactMap(number).map(Float.init)
            return values.count == list.count ? values : nil
        }
        doResize = try field("do_resize", bool) ?? doResize
        doRescale = try field("do_rescale", bool) ?? doRescale
        doNormalize = try field("do_normalize", bool) ?? doNormalize
        doConvertRGB = try field("do_convert_rgb", bool)
        rescaleFactor = try field("rescale_factor", number) ?? rescaleFactor
        imageMean = try field("image_mean", floats) ?? imageMean
        imageStd = try field("image_std", floats) ?? imageStd
        if let code = try field("resample", integer) {
            guard let filter = Resampling(rawValue: code) else {
                throw ImageError("preprocessor_config.json", "field 'resample' is \(code); Pillow's filters are 0–5")
            }
            resample = filter
        }
        if let size = json["size"] {
            if let side = integer(size) {
                (height, width) = (side, side)
            } else if let dict = size as? [String: Any], let h = dict["height"].flatMap(integer), let w = dict["width"].flatMap(integer) {
                (height, width) = (h, w)
            } else {
                throw ImageError("preprocessor_config.json", "The `size` dictionary must contain the keys `height` and `width`. Got \(size)")
            }
        }
        guard height > 0, width > 0 else { throw ImageError("preprocessor_config.json", "size must be positive, got \(height)×\(width)") }
        guard imageMean.count == 3, imageStd.count == 3, !imageStd.contains(0) else {
            throw ImageError("preprocessor_config.json", "image_mean and image_std need three values (std non-zero)")
        }
    }

    /// The processor as `preprocessor_config.json` holds it (what `ViTImageProcessor.save_pretrained` writes).
    public var jsonObject: [String: Any] {
        var json: [String: Any] = [
            "image_processor_type": "ViTImageProcessor", "do_resize": doResize, "size": ["height": height, "width": width],
            "resample": resample.rawValue, "do_rescale": doRescale, "rescale_factor": rescaleFactor,
            "do_normalize": doNormalize, "image_mean": imageMean, "image_std": imageStd,
        ]
        if let doConvertRGB { json["do_convert_rgb"] = doConvertRGB }
        return json
    }

    /// Writes `DIR/preprocessor_config.json`.
    public func save(modelDirectory directory: String) throws {
        try JSONSerialization.data(withJSONObject: jsonObject, options: [.prettyPrinted, .sortedKeys])
            .write(to: URL(fileURLWithPath: directory + "/preprocessor_config.json"))
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

    /// A batch (B, 3, H, W) from images of any size (each is resized to the processor's size).
    public func pixelValues(_ images: [Image]) throws -> Tensor {
        images.isEmpty ? Tensor(zeros: [0, 3, height, width]) : Tensor.stacked(try images.map(pixelValues))
    }
}
