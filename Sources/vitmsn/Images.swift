import ArgumentParser
import Foundation
import ViTMSN

/// How image files are read, shared by every command that takes images.
struct ImageOptions: ParsableArguments {
    @Flag(help: "Ignore the EXIF orientation of JPEG, PNG and WebP files (applied by default, as transformers' load_image does; a TIFF's is part of loading it, as in Pillow).")
    var noExifTranspose = false
    @Option(help: "Transparency: drop (Pillow's convert(\"RGB\")) or white (composite on white).")
    var alpha: String = "drop"
    @Option(help: "Warn above this many pixels and refuse above twice as many (Pillow's MAX_IMAGE_PIXELS by default).")
    var maxPixels = ImageDecoder.defaultMaxPixels

    func validate() throws {
        guard AlphaHandling(rawValue: alpha) != nil else { throw ValidationError("--alpha must be drop or white, got '\(alpha)'") }
        guard maxPixels > 0 else { throw ValidationError("--max-pixels must be positive") }
    }

    var reading: ImageReading {
        ImageReading(applyExifOrientation: !noExifTranspose, alpha: AlphaHandling(rawValue: alpha)!, maxPixels: maxPixels, warn: { warn($0) })
    }
}

/// Reports the failed inputs on stderr; returns whether any failed.
func report<Value>(_ results: [Result<Value, ImageError>]) -> Bool {
    let failures = results.compactMap { if case .failure(let e) = $0 { e } else { nil } }
    for failure in failures { FileHandle.standardError.write(Data("error: \(failure)\n".utf8)) }
    if !failures.isEmpty { FileHandle.standardError.write(Data("\(failures.count) image(s) could not be processed\n".utf8)) }
    return !failures.isEmpty
}

/// Every image file below `folder` (by extension: `ImageDecoder.fileExtensions`), sorted by path (`--dir` of
/// `classify` and `embed`). Other files are named in a warning, not dropped silently.
func imageFiles(in folder: String) throws -> [String] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue,
          let walker = FileManager.default.enumerator(atPath: folder)
    else { throw CLIError("\(folder): not a folder that can be listed") }
    var (images, skipped) = ([String](), [String]())
    for case let file as String in walker {
        if ImageDecoder.fileExtensions.contains(URL(fileURLWithPath: file).pathExtension.lowercased()) {
            images.append(file)
        } else if walker.fileAttributes?[.type] as? FileAttributeType != .typeDirectory, !(file as NSString).lastPathComponent.hasPrefix(".") {
            skipped.append(file)
        }
    }
    if !skipped.isEmpty {
        let listed = skipped.sorted().prefix(5).joined(separator: ", ") + (skipped.count > 5 ? ", …" : "")
        warn("\(folder): skipped \(skipped.count) file(s) whose extension is not an image format's (\(imageExtensionList)): \(listed)")
    }
    return images.sorted().map { folder + "/" + $0 }
}

/// ".jpg, .jpeg, …" for messages.
let imageExtensionList = ImageDecoder.fileExtensions.sorted().map { "." + $0 }.joined(separator: ", ")
