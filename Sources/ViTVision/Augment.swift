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
