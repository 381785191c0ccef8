import Foundation

/// Typed reads of `JSONSerialization` values. Foundation hands numbers and booleans back as `NSNumber`, and a
/// Swift `is Bool` test is true for the numbers 0 and 1, so booleans are told apart by their class.
private let booleanClass = ObjectIdentifier(type(of: NSNumber(value: true)))

private func isBoolean(_ number: NSNumber) -> Bool { ObjectIdentifier(type(of: number)) == booleanClass }

/// An integer written without a fraction or exponent (`3`, not `3.0` or `true`).
package func jsonInteger(_ value: Any) -> Int? {
    guard let number = value as? NSNumber, !isBoolean(number),
          let exact = Int(exactly: number.doubleValue), number.stringValue == String(exact)
    else { return nil }
    return exact
}

/// Any JSON number, as a Double (`true` is not a number).
package func jsonNumber(_ value: Any) -> Double? {
    guard let number = value as? NSNumber, !isBoolean(number) else { return nil }
    return number.doubleValue
}

package func jsonBool(_ value: Any) -> Bool? {
    guard let number = value as? NSNumber, isBoolean(number) else { return nil }
    return number.boolValue
}
