import CZlib

/// The uncompressed ("stored") zip archives `torch.save` writes, read through the mapped file: the central
/// directory (zip64 included) gives each entry's byte range, checked against the file before it is trusted.
/// Entries are handed out in place, after their CRC-32 is verified.
public final class ZipArchive {
    public struct Entry: Sendable {
        public let name: String
        public let data: Range<Int> // bytes of the stored entry within the file
        let crc32: UInt32
    }

    public let path: String
    public let entries: [String: Entry]
    let file: MappedFile
    private var verified: Set<String> = []

    public init(file: MappedFile) throws {
        self.file = file
        path = file.path
        let bytes = file.bytes
        func fail(_ reason: String) -> CheckpointError { CheckpointError(file.path, "zip: \(reason)") }
        // Offsets come from the file: compared without adding to them, so values near Int.max cannot overflow.
        func u16(_ at: Int) throws -> Int {
            guard at >= 0, at <= bytes.count - 2 else { throw fail("record at \(at) runs past the end of the file") }
            return Int(bytes.loadUnaligned(fromByteOffset: at, as: UInt16.self).littleEndian)
        }
        func u32(_ at: Int) throws -> Int {
            guard at >= 0, at <= bytes.count - 4 else { throw fail("record at \(at) runs past the end of the file") }
            return Int(bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian)
        }
        func u64(_ at: Int) throws -> Int {
            guard at >= 0, at <= bytes.count - 8 else { throw fail("record at \(at) runs past the end of the file") }
            let value = bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self).littleEndian
            guard value <= UInt64(Int.max) else { throw fail("a size or offset is out of range") }
            return Int(value)
        }

        // End of central directory: the last signature within the final 64 KiB + 22 bytes.
        guard bytes.count >= 22 else { throw fail("file is too short to be a zip archive") }
        var end = -1
        for at in stride(from: bytes.count - 22, through: max(0, bytes.count - 22 - 65_535), by: -1) where try u32(at) == 0x0605_4B50 {
            end = at
            break
        }
        guard end >= 0 else { throw fail("no end-of-central-directory record (truncated or not a zip)") }
        var count = try u16(end + 10)
        var directorySize = try u32(end + 12)
        var directoryStart = try u32(end + 16)
        if count == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryStart == 0xFFFF_FFFF {
            // zip64: the locator sits just before the classic record and points at the zip64 record.
            guard end >= 20, try u32(end - 20) == 0x0706_4B50 else { throw fail("zip64 locator missing") }
            let record = try u64(end - 12)
            guard try u32(record) == 0x0606_4B50 else { throw fail("zip64 end-of-central-directory record missing") }
            (count, directorySize, directoryStart) = (try u64(record + 32), try u64(record + 40), try u64(record + 48))
        }
        guard directoryStart <= bytes.count, directorySize <= bytes.count - directoryStart else {
            throw fail("central directory lies outside the file")
        }

        var entries: [String: Entry] = [:]
        var at = directoryStart
        for _ in 0..<count {
            guard try u32(at) == 0x0201_4B50 else { throw fail("corrupt central directory at byte \(at)") }
            let method = try u16(at + 10)
            let crc = UInt32(try u32(at + 16))
            var compressed = try u32(at + 20)
            var size = try u32(at + 24)
            let nameLength = try u16(at + 28), extraLength = try u16(at + 30), commentLength = try u16(at + 32)
            var localHeader = try u32(at + 42)
            guard at + 46 + nameLength <= bytes.count else { throw fail("entry name runs past the end of the file") }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(at + 46)..<(at + 46 + nameLength)]), as: UTF8.self)
            // zip64 extra field: the 64-bit values of whichever fields were saturated, in this order.
            var extra = at + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let (tag, length) = (try u16(extra), try u16(extra + 2))
                if tag == 0x0001 {
                    var field = extra + 4
                    if size == 0xFFFF_FFFF { size = try u64(field); field += 8 }
                    if compressed == 0xFFFF_FFFF { compressed = try u64(field); field += 8 }
                    if localHeader == 0xFFFF_FFFF { localHeader = try u64(field) }
                }
                extra += 4 + length
            }
            guard method == 0 else { throw fail("entry '\(name)' is compressed (method \(method)); torch.save stores entries uncompressed") }
            guard compressed == size else { throw fail("entry '\(name)' has different stored and original sizes") }
            guard try u32(localHeader) == 0x0403_4B50 else { throw fail("entry '\(name)': no local header at byte \(localHeader)") }
            let dataStart = localHeader + 30 + (try u16(localHeader + 26)) + (try u16(localHeader + 28))
            guard dataStart <= bytes.count, size <= bytes.count - dataStart else {
                throw fail("entry '\(name)' (\(size) bytes at \(dataStart)) runs past the end of the \(bytes.count)-byte file")
            }
            guard entries[name] == nil else { throw fail("two entries are named '\(name)'") }  // else the last would silently win
            entries[name] = Entry(name: name, data: dataStart..<(dataStart + size), crc32: crc)
            at += 46 + nameLength + extraLength + commentLength
        }
        self.entries = entries
    }

    /// The entry's bytes, in place, after checking its CRC-32 (the first time it is read).
    public func contents(of name: String) throws -> UnsafeRawBufferPointer {
        guard let entry = entries[name] else { throw CheckpointError(path, "zip: no entry '\(name)'") }
        let data = UnsafeRawBufferPointer(rebasing: file.bytes[entry.data])
        if !verified.contains(name) {
            guard CRC32.checksum(data) == entry.crc32 else {
                throw CheckpointError(path, "zip: entry '\(name)' fails its CRC-32 check (the file is corrupt)")
            }
            verified.insert(name)
        }
        return data
    }
}

/// CRC-32 (IEEE 802.3, as zip uses) through zlib's vectorised implementation.
enum CRC32 {
    static func checksum(_ data: UnsafeRawBufferPointer) -> UInt32 {
        var crc = crc32(0, nil, 0)
        var rest = data
        while !rest.isEmpty { // zlib takes 32-bit lengths
            let chunk = UnsafeRawBufferPointer(rebasing: rest.prefix(1 << 30))
            crc = crc32(crc, chunk.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt32(chunk.count))
            rest = UnsafeRawBufferPointer(rebasing: rest.dropFirst(chunk.count))
        }
        return UInt32(crc)
    }
}
