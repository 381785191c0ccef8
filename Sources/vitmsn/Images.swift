import ArgumentParser
import Dispatch
import Foundation
import ViTCore
import ViTVision

/// How image files are read, shared by every command that takes images.
struct ImageOptions: ParsableArguments {
    @Flag(help: "Ignore the EXIF orientation of JPEGs (applied by default, as transformers' load_image does).")
    var noExifTranspose = false
    @Option(help: "Transparency: drop (Pillow's convert(\"RGB\")) or white (composite on white).")
    var alpha: String = "drop"
    @Option(help: "Warn above this many pixels and refuse above twice as many (Pillow's MAX_IMAGE_PIXELS by default).")
    var maxPixels = ImageDecoder.defaultMaxPixels

    func validate() throws {
        guard AlphaHandling(rawValue: alpha) != nil else { throw ValidationError("--alpha must be drop or white, got '\(alpha)'") }
        guard maxPixels > 0 else { throw ValidationError("--max-pixels must be positive") }
    }

    /// Decodes and preprocesses `paths` on all cores. Each result is the (3, H, W) pixel values or the
    /// error that stopped that image; one bad file never stops the others.
    func pixelValues(_ paths: [String], processor: ImageProcessor) -> [Result<Tensor, ImageError>] {
        let results = UnsafeMutableBufferPointer<Result<Tensor, ImageError>>.allocate(capacity: paths.count)
        defer {
            _ = results.deinitialize() // every slot was initialised by its iteration
            results.deallocate()
        }
        let handling = AlphaHandling(rawValue: alpha)!
        let box = UncheckedSendable(results)
        DispatchQueue.concurrentPerform(iterations: paths.count) { i in  // each iteration fills its own slot
            let result: Result<Tensor, ImageError>
            do {
                let image = try ImageDecoder.loadRGB(
                    path: paths[i], applyExifOrientation: !noExifTranspose, alpha: handling, maxPixels: maxPixels, warn: warn)
                result = .success(try processor.pixelValues(image))
            } catch let error as ImageError {
                result = .failure(ImageError(paths[i], error.reason))
            } catch {
                result = .failure(ImageError(paths[i], "\(error)"))
            }
            (box.value.baseAddress! + i).initialize(to: result)
        }
        return Array(results)
    }
}

/// Reports unreadable images on stderr; returns whether any failed.
func report(_ failures: [ImageError]) -> Bool {
    for failure in failures { FileHandle.standardError.write(Data("error: \(failure)\n".utf8)) }
    if !failures.isEmpty { FileHandle.standardError.write(Data("\(failures.count) image(s) could not be processed\n".utf8)) }
    return !failures.isEmpty
}
