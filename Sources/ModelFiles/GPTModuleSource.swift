/// The PyTorch modules an export's tensors may need beyond `torch.nn`, as Python source: an
/// export's `ringsgd.pytorch_source` metadata. `exec` it, then `eval` the `ringsgd.pytorch`
/// expression (`GPT(vocab=256, block_size=128, …)`), and `load_state_dict` the file:
///
///     from safetensors import safe_open; from safetensors.torch import load_file
///     meta = safe_open(path, "pt").metadata(); scope = {}
///     exec(meta["ringsgd.pytorch_source"], scope)
///     model = eval(meta["ringsgd.pytorch"], scope); model.load_state_dict(load_file(path))
///
/// Names and shapes are nanoGPT's (pre-norm blocks, fused QKV, layer norm eps 1e-5, a head
/// tied to `wte` unless `tie_embeddings=False`); the GELU is GPT-2's tanh form, as ringsgd's
/// (nanoGPT's `nn.GELU()` is the exact erf form: weights trained there and read with
/// `--init-from` give slightly different activations).
public enum GPTModuleSource {
    public static let python = """
import math, torch, torch.nn as nn, torch.nn.functional as F

class CausalSelfAttention(nn.Module):
    def __init__(self, embed, heads, dropout):
        super().__init__()
        self.c_attn = nn.Linear(embed, 3 * embed); self.c_proj = nn.Linear(embed, embed)
        self.heads, self.dropout = heads, dropout
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

class MLP(nn.Module):
    def __init__(self, embed):
        super().__init__()
        self.c_fc = nn.Linear(embed, 4 * embed); self.c_proj = nn.Linear(4 * embed, embed)
    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

class Block(nn.Module):
    def __init__(self, embed, heads, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed); self.attn = CausalSelfAttention(embed, heads, dropout)
        self.ln_2 = nn.LayerNorm(embed); self.mlp = MLP(embed); self.drop = nn.Dropout(dropout)
    def forward(self, x):
        x = x + self.drop(self.attn(self.ln_1(x)))
        return x + self.drop(self.mlp(self.ln_2(x)))

class GPT(nn.Module):
    def __init__(self, vocab, block_size, layers, heads, embed, dropout=0.0, tie_embeddings=True):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, embed), wpe=nn.Embedding(block_size, embed), drop=nn.Dropout(dropout),
            h=nn.ModuleList([Block(embed, heads, dropout) for _ in range(layers)]), ln_f=nn.LayerNorm(embed)))
        self.lm_head = nn.Linear(embed, vocab, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
    def forward(self, idx):
        t = self.transformer
        x = t.drop(t.wte(idx) + t.wpe(torch.arange(idx.shape[1], device=idx.device)))
        for block in t.h:
            x = block(x)
        return self.lm_head(t.ln_f(x))
"""
}

extension GPTModuleSource {
    /// A residual block of a layer list (`Residual` in NeuralNet): `exec` it before `eval`-ing
    /// the export's `ringsgd.pytorch` (`nn.Sequential(…, Residual(nn.Sequential(…), nn.Sequential(…)), …)`).
    public static let residual = """
import torch.nn as nn

class Residual(nn.Module):
    def __init__(self, layers, shortcut):
        super().__init__()
        self.layers, self.shortcut = layers, shortcut
    def forward(self, x):
        return self.layers(x) + self.shortcut(x)
"""
}
