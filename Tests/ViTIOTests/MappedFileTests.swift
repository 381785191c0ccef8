import Foundation
import XCTest
@testable import ViTIO

final class MappedFileTests: XCTestCase {
    #if os(Linux)
    /// A checkpoint's mapping is never PMD-mapped: with a page cache of 2 MB folios it would be, and giving
    /// back one tensor's pages would then leave the rest of each 2 MB resident (ViT-B's int8 `classify` peaked
    /// at 218 MB instead of 146). The kernel reports the mapping's `MADV_NOHUGEPAGE` as `nh` in its VmFlags.
    func testCheckpointMappingsAreNotHugePageMapped() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vitmsn-map-\(UUID().uuidString)").path
        try Data(repeating: 7, count: 1 << 20).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try MappedFile(path: path)
        let start = String(UInt(bitPattern: file.bytes.baseAddress!), radix: 16)
        let smaps = try withExtendedLifetime(file) {  // read to the end: /proc files report a size of 0
            String(decoding: try XCTUnwrap(FileHandle(forReadingAtPath: "/proc/self/smaps")).readToEnd() ?? Data(), as: UTF8.self)
        }
        let entry = try XCTUnwrap(smaps.components(separatedBy: "\n").drop { !$0.hasPrefix(start + "-") }.first { $0.hasPrefix("VmFlags:") },
                                  "no smaps entry at \(start)")
        XCTAssertTrue(entry.split(separator: " ").contains("nh"), entry)
    }
    #endif
}
