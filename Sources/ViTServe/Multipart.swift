import Foundation

/// The part of a `multipart/form-data` body (RFC 7578) that the simple endpoints take: the first one with a
/// non-empty body. Written here because MultipartKit 4.7.1, the only version on hand, traps on a header byte
/// above 0x7F (found by fuzz/parsers); this reader needs no headers, so it only skips them, within a limit.
enum MultipartForm {
    static let headerLimit = 16 * 1024

    static func firstNonEmptyPart(of body: Data, boundary: String) throws -> Data {
        let bytes = [UInt8](body)
        let delimiter = Array("--\(boundary)".utf8), crlf: [UInt8] = [13, 10]
        // The first delimiter opens the body or follows a line break (a preamble may come before it).
        guard var at = bytes.starts(with: delimiter) ? 0 : bytes.firstRange(of: crlf + delimiter).map({ $0.lowerBound + 2 }) else {
            throw RequestError(400, "the multipart body has no '--\(boundary)' delimiter")
        }
        while true {
            at += delimiter.count
            if bytes[at...].starts(with: [45, 45]) { break }  // "--": the closing delimiter
            while at < bytes.count, bytes[at] == 32 || bytes[at] == 9 { at += 1 }  // transport padding
            guard bytes[at...].starts(with: crlf) else { throw RequestError(400, "the multipart body is malformed: no line break after a delimiter") }
            at += 2
            let headerEnd: Int
            if bytes[at...].starts(with: crlf) {
                headerEnd = at + 2  // a part with no headers
            } else {
                let window = bytes[at..<min(bytes.count, at + headerLimit)]
                guard let end = window.firstRange(of: crlf + crlf) else {
                    throw RequestError(400, "the multipart body is malformed: a part's headers do not end within \(headerLimit) bytes")
                }
                headerEnd = end.upperBound
            }
            guard let next = bytes[headerEnd...].firstRange(of: crlf + delimiter) else {
                throw RequestError(400, "the multipart body is malformed: a part is not closed by '--\(boundary)'")
            }
            if next.lowerBound > headerEnd { return Data(bytes[headerEnd..<next.lowerBound]) }
            at = next.lowerBound + 2
        }
        throw RequestError(400, "the multipart body has no file part")
    }
}
