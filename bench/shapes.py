"""Problem shapes of the benchmark scripts: (B, H, KV heads, N, D), and the
example specs their rbfc kernels run."""

# The benchmarks' shapes (the issue's): multi-head, bf16.
SHAPES = [(4, 16, 16, 4096, 64), (4, 16, 16, 4096, 128), (1, 16, 16, 16384, 128)]
# The forward's add the small problems where a fixed cost shows (issue 23
# asks RBF within 5% of dot there too).
FORWARD_SHAPES = SHAPES + [(1, 8, 8, 512, 64), (1, 16, 16, 1024, 64)]

# examples/ spec of the dot-product and RBF variants, without and with a
# causal mask: (variant, causal) -> file.
RBFC_SPECS = {("dot", False): "softmax.attn", ("dot", True): "causal.attn",
              ("rbf", False): "rbf.attn", ("rbf", True): "rbf_causal.attn"}


def parse_shape(text):
    """BxHxNxD, or BxH/KVxNxD with KV key/value heads: (B, H, KV, N, D)."""
    b, h, n, d = text.split("x")
    h, _, kv = h.partition("/")
    return int(b), int(h), int(kv or h), int(n), int(d)


def parse_shapes(text, default=SHAPES):
    """A comma-separated list of parse_shape's; `default` when empty."""
    return [parse_shape(s) for s in text.split(",") if s] or default


def shape_of(row):
    """(B, H, KV, N, D) of a result row (rows before KV existed have none)."""
    return row["B"], row["H"], row.get("KV", row["H"]), row["N"], row["D"]


def shape_label(shape):
    B, H, KV, N, D = shape
    return f"{B}x{H}{'' if KV == H else f'/{KV}'}x{N}x{D}"


def result_suffix(shapes, default=SHAPES):
    """'' for the script's default shapes, else the shapes, so other runs do
    not replace the main result file."""
    if shapes == default:
        return ""
    return "-" + "-".join(shape_label(s).replace("/", "-") for s in shapes)
