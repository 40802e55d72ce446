/// A GPT's shape (`model.gpt` in a config): nanoGPT's `GPTConfig`.
public struct GPTSpec: Codable, Equatable, CustomStringConvertible {
    /// Transformer blocks, attention heads, and the width of every token's vector.
    public var layers: Int, heads: Int, embed: Int
    /// The longest sequence (positions in `wpe`); training windows are this long.
    public var blockSize: Int
    /// Token ids are 0 ..< vocab (256 for bytes).
    public var vocab: Int
    /// Dropout after the embeddings, on attention probabilities and on each residual branch.
    public var dropout: Double
    /// Whether the output head is the token embedding's matrix (GPT-2's weight tying).
    public var tieEmbeddings: Bool

    public init(layers: Int = 4, heads: Int = 4, embed: Int = 128, blockSize: Int = 128, vocab: Int = 256,
                dropout: Double = 0, tieEmbeddings: Bool = true) {
        (self.layers, self.heads, self.embed, self.blockSize, self.vocab) = (layers, heads, embed, blockSize, vocab)
        (self.dropout, self.tieEmbeddings) = (dropout, tieEmbeddings)
    }

    enum CodingKeys: String, CodingKey {
        case layers, heads, embed, blockSize = "block_size", vocab, dropout, tieEmbeddings = "tie_embeddings"
    }

    /// Why this shape cannot be built, or nil.
    public var problem: String? {
        if layers < 1 || layers > 1024 { return "model.gpt.layers must be in 1…1024, got \(layers)" }
        if heads > 4096 || embed > 1 << 16 { return "model.gpt.heads and .embed must be at most 4096 and 65536, got \(heads) and \(embed)" }
        if blockSize > 1 << 20 { return "model.gpt.block_size must be at most 1048576, got \(blockSize)" }
        // The lower bounds first: a checkpoint's description is read from its bytes, and a
        // negative size would overflow the products below (a trap, not an error).
        if heads < 1 || embed < 1 || embed % heads != 0 {
            return "model.gpt.embed (\(embed)) must be a positive multiple of model.gpt.heads (\(heads))"
        }
        if blockSize < 2 { return "model.gpt.block_size must be ≥ 2 (a window predicts its next tokens), got \(blockSize)" }
        // Attention keeps heads × T² scores a sample, the widest activation: bounded as a layer
        // list's are (2³¹ values a sample), so reserving it neither overflows nor asks for terabytes.
        if heads * blockSize * blockSize > 1 << 31 || embed * blockSize > 1 << 31 {
            return "model.gpt.heads × block_size² (\(heads) × \(blockSize)²) and embed × block_size must be at most 2³¹ values a sample; make the block or the model smaller"
        }
        if vocab < 2 || vocab > 1 << 24 { return "model.gpt.vocab must be in 2…16777216, got \(vocab)" }
        // The other wide activations under the same bound: the MLP's 4·C a position, and the
        // logits and their gradient, vocab a position.
        if 4 * embed * blockSize > 1 << 31 || vocab * blockSize > 1 << 31 {
            return "model.gpt: 4 × embed × block_size (\(4 * embed) × \(blockSize)) and vocab × block_size (\(vocab) × \(blockSize)) must be at most 2³¹ values a sample; make the block, the width or the vocabulary smaller"
        }
        if !(dropout >= 0 && dropout < 1) { return "model.gpt.dropout must be in [0, 1), got \(dropout)" }
        return nil
    }

    public var description: String {
        "gpt(layers: \(layers), heads: \(heads), embed: \(embed), block_size: \(blockSize), vocab: \(vocab)"
            + (dropout > 0 ? ", dropout: \(dropout)" : "") + (tieEmbeddings ? "" : ", untied") + ")"
    }
}
