import Foundation
import XCTest
@testable import ViTTrain

final class DatasetsTests: XCTestCase {
    /// Writes Fashion-MNIST's four files (gzip IDX) with `images` of `height` × `width` into a new directory.
    func fashionDirectory(images: Int, height: Int, width: Int) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vitmsn-idx-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func idx(_ shape: [Int], _ name: String) throws {
            var bytes: [UInt8] = [0, 0, 0x08, UInt8(shape.count)]
            for d in shape { bytes += (0..<4).map { UInt8((d >> (8 * (3 - $0))) & 0xFF) } }
            bytes += [UInt8](repeating: 1, count: shape.reduce(1, *))
            let path = directory + "/" + name
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let gzip = Process()
            gzip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            gzip.arguments = ["gzip", path]
            try gzip.run()
            gzip.waitUntilExit()
            XCTAssertEqual(gzip.terminationStatus, 0)
        }
        for split in ["train", "t10k"] {
            try idx([images, height, width], split + "-images-idx3-ubyte")
            try idx([images], split + "-labels-idx1-ubyte")
        }
        return directory
    }

    func testEmptyOrZeroSizedIDXImagesAreRefused() throws {
        let good = try FashionMNIST.load(train: false, directory: fashionDirectory(images: 2, height: 3, width: 4))
        XCTAssertEqual(good.images.count, 2)
        for (images, height, width) in [(0, 28, 28), (2, 0, 0), (2, 28, 0)] {
            let directory = try fashionDirectory(images: images, height: height, width: width)
            XCTAssertThrowsError(try FashionMNIST.load(train: true, directory: directory)) { error in
                XCTAssertTrue("\(error)".contains("train-images-idx3-ubyte.gz: \(images) images of \(height)×\(width) pixels"), "\(error)")
            }
        }
    }
}
