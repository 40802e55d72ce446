import GradientSync
import XCTest

/// How the flat gradient is cut into buckets.
final class BucketPlanTests: XCTestCase {
    /// Layers of 100, 50 (no parameters), 300, 20, 600 floats, in forward order.
    let extents: [Range<Int>?] = [0 ..< 100, nil, 100 ..< 400, 400 ..< 420, 420 ..< 1020]

    /// Property: buckets tile the buffer from its end in backward order, hold whole layers,
    /// start small, and each is reported complete by its lowest layer.
    func testBucketsTileTheBufferInBackwardOrderFromASmallFirstOne() {
        let plan = BucketPlan(extents: extents, bucketBytes: 1200, firstBucketBytes: 400)
        XCTAssertEqual(plan.buckets, [420 ..< 1020, 100 ..< 420, 0 ..< 100])
        XCTAssertEqual(plan.completedBy, [2, nil, 1, nil, 0])
        XCTAssertEqual(BucketPlan(extents: extents, bucketBytes: 1600, firstBucketBytes: 400).buckets, [420 ..< 1020, 0 ..< 420],
                       "a bucket closes once it reaches the target: 20 + 300 floats are 1280 bytes, + 100 make 1680")
        XCTAssertEqual(BucketPlan(extents: extents, bucketBytes: 0).buckets, [0 ..< 1020], "0: one bucket")
        XCTAssertEqual(BucketPlan(extents: extents, bucketBytes: 4).buckets, [420 ..< 1020, 400 ..< 420, 100 ..< 400, 0 ..< 100], "a layer per bucket")
    }
}
