import NeuralNet
import XCTest

/// `ColumnPhases` against its definition on every row length from 1 to 40: the SIMD16 blocks
/// (16 values on), the short rows' shuffles (4 to 15) and the value-by-value rows (1 to 3).
final class ColumnPhasesTests: XCTestCase {
    /// Room for a phase of the longest row, and guards after it.
    private let runLength = 24
    private let guardValue: Float = 1e30

    /// `count` random values split into four runs of `runLength` guard values, phase k's first
    /// value at `starts[k]`.
    private func split(count: Int, starts: [Int], using g: inout SeededGenerator) -> (row: [Float], runs: [Float]) {
        let row = (0 ..< count).map { _ in g.uniform(-1, 1) }
        var runs = [Float](repeating: guardValue, count: 4 * runLength)
        row.withUnsafeBufferPointer { r in
            runs.withUnsafeMutableBufferPointer { p in
                let b = p.baseAddress!
                ColumnPhases.split(r.baseAddress!, count: count, into: (b + starts[0], b + starts[1], b + starts[2], b + starts[3]))
            }
        }
        return (row, runs)
    }

    /// Phases written past a row of `count` values, as zeros: j < 2 (4 to 7 values) or j < 4 (8 to 15).
    private func zeroedPerPhase(_ count: Int) -> Int { count >= 16 || count < 4 ? 0 : count < 8 ? 2 : 4 }

    /// Property: split writes phases.k[j] = row[4j + k] for every 4j + k < count; a row of 4 to
    /// 15 values also writes 0 at 4j + k ≥ count for j < 2 (fewer than 8) or j < 4, as its doc
    /// promises its callers; nothing else of the phases' runs is written.
    func testSplitPlacesEveryValueAndWritesNothingElse() {
        var g = SeededGenerator(seed: 3)
        for count in 1 ... 40 {
            let (row, runs) = split(count: count, starts: [0, runLength, 2 * runLength, 3 * runLength], using: &g)
            for k in 0 ..< 4 {
                for j in 0 ..< runLength {
                    let value = runs[k * runLength + j], column = 4 * j + k
                    if column < count {
                        XCTAssertEqual(value, row[column], "count \(count): phase \(k)[\(j)]")
                    } else if j < zeroedPerPhase(count) {
                        XCTAssertEqual(value, 0, "count \(count): phase \(k)[\(j)] past the row is 0")
                    } else {
                        XCTAssertEqual(value, guardValue, "count \(count): phase \(k)[\(j)] not written")
                    }
                }
            }
        }
    }

    /// Property: in `Winograd4x4`'s padded rows — input column c at padded column c + 1, so
    /// phase 3 is written one value into phase 0's run — the padding column 0 is never written,
    /// every padded column of the row holds its input value, and those a short row's split
    /// writes past it hold 0.
    func testSplitIntoPaddedPhasesLeavesTheLeftPaddingAlone() {
        var g = SeededGenerator(seed: 5)
        for count in 1 ... 40 {
            let (row, runs) = split(count: count, starts: [runLength, 2 * runLength, 3 * runLength, 1], using: &g)
            func padded(_ column: Int) -> Float { runs[(column % 4) * runLength + column / 4] }
            XCTAssertEqual(runs[0], guardValue, "count \(count): the left padding column was written")
            for column in 1 ... count { XCTAssertEqual(padded(column), row[column - 1], "count \(count): padded column \(column)") }
            for column in stride(from: count + 1, through: 4 * zeroedPerPhase(count), by: 1) {
                XCTAssertEqual(padded(column), 0, "count \(count): padded column \(column) past the row")
            }
        }
    }

    /// Property: merge writes row[4j + k] = phases.k[j] for every 4j + k < count, whatever the
    /// phases hold past the row (the short rows read up to 4 values a phase), and writes
    /// nothing before or after the row.
    func testMergeRestoresTheRowAndWritesNothingElse() {
        var g = SeededGenerator(seed: 4)
        for count in 1 ... 40 {
            let runs = (0 ..< 4 * runLength).map { _ in g.uniform(-1, 1) }
            var row = [Float](repeating: guardValue, count: count + 16)
            runs.withUnsafeBufferPointer { p in
                row.withUnsafeMutableBufferPointer { r in
                    let b = p.baseAddress!
                    ColumnPhases.merge((b, b + runLength, b + 2 * runLength, b + 3 * runLength), count: count, into: r.baseAddress! + 8)
                }
            }
            XCTAssertEqual(Array(row[..<8]), [Float](repeating: guardValue, count: 8), "count \(count): before the row")
            XCTAssertEqual(Array(row[(count + 8)...]), [Float](repeating: guardValue, count: 8), "count \(count): after the row")
            for column in 0 ..< count {
                XCTAssertEqual(row[8 + column], runs[(column % 4) * runLength + column / 4], "count \(count): column \(column)")
            }
        }
    }
}
