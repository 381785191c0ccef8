import Foundation
import ViTCore

/// The training augmentations of Transformers' `run_image_classification.py` (torchvision on PIL images).
extension Image {
    /// The pixels of the rectangle at (x, y) of size width × height (inside the image).
    public func cropped(x: Int, y: Int, width cropWidth: Int, height cropHeight: Int) -> Image {
        precondition(x >= 0 && y >= 0 && cropWidth > 0 && cropHeight > 0 && x + cropWidth <= width && y + cropHeight <= height,
                     "crop \(cropWidth)×\(cropHeight) at (\(x), \(y)) of a \(width)×\(height) image")
        let channels = mode.channels
        var out = [UInt8]()
        out.reserveCapacity(cropWidth * cropHeight * channels)
        for row in y..<(y + cropHeight) {
            let start = (row * width + x) * channels
            out += pixels[start..<(start + cropWidth * channels)]
        }
        return Image(width: cropWidth, height: cropHeight, mode: mode, pixels: out)
    }

    /// Mirrored left to right.
    public func flippedHorizontally() -> Image {
        let channels = mode.channels
        var out = pixels
        for row in 0..<height {
            for x in 0..<width {
                let (source, target) = ((row * width + x) * channels, (row * width + width - 1 - x) * channels)
                for c in 0..<channels { out[target + c] = pixels[source + c] }
            }
        }
        return Image(width: width, height: height, mode: mode, pixels: out)
    }

    /// torchvision's `RandomResizedCrop.get_params`: up to ten tries at a rectangle with an area fraction drawn
    /// from `scale` and a log-uniform aspect ratio from `ratio` that fits; otherwise the centre crop with the
    /// ratio clamped to `ratio`. Returns (x, y, width, height).
    public func randomResizedCropBox<G: RandomNumberGenerator>(
        scale: ClosedRange<Double> = 0.08...1, ratio: ClosedRange<Double> = (3.0 / 4)...(4.0 / 3), using generator: inout G
    ) -> (x: Int, y: Int, width: Int, height: Int) {
        let area = Double(width * height)
        let logRatio = log(ratio.lowerBound)...log(ratio.upperBound)
        for _ in 0..<10 {
            let targetArea = area * Double.random(in: scale, using: &generator)
            let aspect = exp(Double.random(in: logRatio, using: &generator))
            let w = Int((targetArea * aspect).squareRoot().rounded())
            let h = Int((targetArea / aspect).squareRoot().rounded())
            if w > 0, h > 0, w <= width, h <= height {
                return (Int.random(in: 0...(width - w), using: &generator), Int.random(in: 0...(height - h), using: &generator), w, h)
            }
        }
        let inRatio = Double(width) / Double(height)
        var (w, h) = (width, height)
        if inRatio < ratio.lowerBound {
            h = Int((Double(w) / ratio.lowerBound).rounded())
        } else if inRatio > ratio.upperBound {
            w = Int((Double(h) * ratio.upperBound).rounded())
        }
        return ((width - w) / 2, (height - h) / 2, w, h)
    }
}

extension ImageProcessor {
    /// (C, H, W) values of `image` (L or RGB) resized bilinearly to the processor's size and normalised: the
    /// evaluation transform of `run_image_classification.py` (fine-tuning's validation, low-shot features,
    /// the baselines).
    public func evaluationPixelValues(_ image: Image) -> Tensor {
        normalized(image.resized(width: width, height: height, resample: .bilinear))
    }
}

/// Random resized crop, horizontal flip, resize and normalisation: the training transform of
/// `run_image_classification.py`, with the processor's size, mean and std.
public struct TrainingAugmentation: Sendable {
    public var processor: ImageProcessor
    public var scale: ClosedRange<Double> = 0.08...1
    public var ratio: ClosedRange<Double> = (3.0 / 4)...(4.0 / 3)
    public var horizontalFlip = true

    public init(processor: ImageProcessor) { self.processor = processor }

    /// (C, H, W) values of one augmented view of `image` (L or RGB, as the model's channels need).
    public func pixelValues<G: RandomNumberGenerator>(_ image: Image, using generator: inout G) -> Tensor {
        let box = image.randomResizedCropBox(scale: scale, ratio: ratio, using: &generator)
        var view = image.cropped(x: box.x, y: box.y, width: box.width, height: box.height)
            .resized(width: processor.width, height: processor.height, resample: .bilinear)
        if horizontalFlip && Bool.random(using: &generator) { view = view.flippedHorizontally() }
        return processor.normalized(view)
    }
}

extension Image {
    /// torchvision's `ColorJitter` on an L or RGB image: brightness, contrast, saturation and hue factors drawn
    /// uniformly from 1 ± strength (hue: ± `hue` of a turn) and applied in a random order. Saturation and hue
    /// leave gray images unchanged, as in torchvision.
    public func colorJittered<G: RandomNumberGenerator>(
        brightness: Double, contrast: Double, saturation: Double, hue: Double, using generator: inout G
    ) -> Image {
        var image = self
        let factors = [
            Double.random(in: max(0, 1 - brightness)...(1 + brightness), using: &generator),
            Double.random(in: max(0, 1 - contrast)...(1 + contrast), using: &generator),
            Double.random(in: max(0, 1 - saturation)...(1 + saturation), using: &generator),
            Double.random(in: -hue...hue, using: &generator),
        ]
        for operation in [0, 1, 2, 3].shuffled(using: &generator) {
            switch operation {
            case 0: image = image.blended(with: 0, factor: factors[0])
            case 1:
                let gray = image.convertedToGrayscale().pixels
                let mean = (Double(gray.reduce(0) { $0 + Int($1) }) / Double(max(gray.count, 1))).rounded()
                image = image.blended(with: mean, factor: factors[1])
            case 2 where mode == .RGB: image = image.blendedWithGray(factor: factors[2])
            case 3 where mode == .RGB: image = image.hueShifted(by: factors[3])
            default: break
            }
        }
        return image
    }

    /// `factor·x + (1 − factor)·value`, clamped to bytes (PIL's `ImageEnhance` blends).
    func blended(with value: Double, factor: Double) -> Image {
        var out = self
        for i in pixels.indices { out.pixels[i] = UInt8(clamping: Int((factor * Double(pixels[i]) + (1 - factor) * value).rounded())) }
        return out
    }

    func blendedWithGray(factor: Double) -> Image {
        let gray = convertedToGrayscale().pixels
        var out = self
        for i in pixels.indices {
            out.pixels[i] = UInt8(clamping: Int((factor * Double(pixels[i]) + (1 - factor) * Double(gray[i / 3])).rounded()))
        }
        return out
    }

    /// Rotates the hue of an RGB image by `shift` turns (through HSV, as torchvision's `adjust_hue`).
    func hueShifted(by shift: Double) -> Image {
        var out = self
        for p in stride(from: 0, to: pixels.count, by: 3) {
            let (r, g, b) = (Double(pixels[p]) / 255, Double(pixels[p + 1]) / 255, Double(pixels[p + 2]) / 255)
            let (maximum, minimum) = (max(r, g, b), min(r, g, b))
            let delta = maximum - minimum
            guard delta > 0 else { continue }
            var h = maximum == r ? (g - b) / delta : maximum == g ? 2 + (b - r) / delta : 4 + (r - g) / delta
            h = (h / 6 + shift + 2).truncatingRemainder(dividingBy: 1)
            let (s, v) = (delta / maximum, maximum)
            let sector = h * 6
            let i = Int(sector) % 6, f = sector - Double(Int(sector))
            let (x, y, z) = (v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f)))
            let rgb = [(v, z, x), (y, v, x), (x, v, z), (x, y, v), (z, x, v), (v, x, y)][i]
            out.pixels[p] = UInt8((rgb.0 * 255).rounded())
            out.pixels[p + 1] = UInt8((rgb.1 * 255).rounded())
            out.pixels[p + 2] = UInt8((rgb.2 * 255).rounded())
        }
        return out
    }

    /// A Gaussian blur with standard deviation `radius` pixels (PIL's `GaussianBlur` radius), separable,
    /// edges extended.
    public func gaussianBlurred(radius: Double) -> Image {
        let extent = max(1, Int((3 * radius).rounded(.up)))
        var kernel = (-extent...extent).map { exp(-Double($0 * $0) / (2 * radius * radius)) }
        let total = kernel.reduce(0, +)
        kernel = kernel.map { $0 / total }
        let channels = mode.channels
        func pass(_ source: [UInt8], horizontal: Bool) -> [UInt8] {
            var out = source
            for y in 0..<height {
                for x in 0..<width {
                    for c in 0..<channels {
                        var acc = 0.0
                        for (k, weight) in kernel.enumerated() {
                            let offset = k - extent
                            let (sx, sy) = horizontal ? (min(max(x + offset, 0), width - 1), y) : (x, min(max(y + offset, 0), height - 1))
                            acc += weight * Double(source[(sy * width + sx) * channels + c])
                        }
                        out[(y * width + x) * channels + c] = UInt8(clamping: Int(acc.rounded()))
                    }
                }
            }
            return out
        }
        return Image(width: width, height: height, mode: mode, pixels: pass(pass(pixels, horizontal: true), horizontal: false))
    }
}

/// One MSN view (`src/data_manager.py:make_transforms`): RandomResizedCrop to `size` with `scale`, flip,
/// colour jitter (strength s: 0.8s brightness/contrast/saturation, 0.2s hue) with probability 0.8, grayscale
/// with probability 0.2, Gaussian blur (radius U[0.1, 2]) with probability 0.5 (blur radius is in pixels of a
/// 224-pixel view, scaled to `size`), normalised by the processor's mean and std.
public struct MSNViewAugmentation: Sendable {
    public var processor: ImageProcessor
    public var size: Int
    public var scale: ClosedRange<Double>
    public var colorJitter = 0.5

    public init(processor: ImageProcessor, size: Int, scale: ClosedRange<Double>, colorJitter: Double = 0.5) {
        (self.processor, self.size, self.scale, self.colorJitter) = (processor, size, scale, colorJitter)
    }

    public func pixelValues<G: RandomNumberGenerator>(_ image: Image, using generator: inout G) -> Tensor {
        let box = image.randomResizedCropBox(scale: scale, using: &generator)
        var view = image.cropped(x: box.x, y: box.y, width: box.width, height: box.height).resized(width: size, height: size, resample: .bilinear)
        if Bool.random(using: &generator) { view = view.flippedHorizontally() }
        if Double.random(in: 0..<1, using: &generator) < 0.8 {
            let s = colorJitter
            view = view.colorJittered(brightness: 0.8 * s, contrast: 0.8 * s, saturation: 0.8 * s, hue: 0.2 * s, using: &generator)
        }
        if Double.random(in: 0..<1, using: &generator) < 0.2, view.mode == .RGB {
            view = view.convertedToGrayscale().converted(toRGBWith: .drop)
        }
        if Double.random(in: 0..<1, using: &generator) < 0.5 {
            view = view.gaussianBlurred(radius: Double.random(in: 0.1...2.0, using: &generator) * Double(size) / 224)
        }
        return processor.normalized(view)
    }
}
