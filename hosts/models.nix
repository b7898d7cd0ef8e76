# Facts about the models the fleet serves, written once: the launcher plans VRAM from them at
# build time (`modelInfo`), when no model file can be read (the build has none; an Ollama model
# has none before it is pulled). From each model's config.json (layers = num_hidden_layers,
# kvHeads = num_key_value_heads, headDim = hidden_size / num_attention_heads); bitsPerWeight is
# the quantisation's average (EXL2 3.5 bpw; GGUF Q4_K_M, Ollama's default tag, about 4.85).
{
  "llama-3.3-70b-exl2-3.5bpw" = {
    parameters = 70.6e9;
    layers = 80;
    kvHeads = 8;
    headDim = 128;
    bitsPerWeight = 3.5;
  };
  "llama-3.1-8b-q4_k_m" = {
    parameters = 8.03e9;
    layers = 32;
    kvHeads = 8;
    headDim = 128;
    bitsPerWeight = 4.85;
  };
  "qwen2.5-14b-q4_k_m" = {
    parameters = 14.8e9;
    layers = 48;
    kvHeads = 8;
    headDim = 128;
    bitsPerWeight = 4.85;
  };
  "qwen2.5-7b-q4_k_m" = {
    parameters = 7.62e9;
    layers = 28;
    kvHeads = 4;
    headDim = 128;
    bitsPerWeight = 4.85;
  };
}
