// Shared by the training shaders (shaders/train_*.comp): their status bits, next to common.glsl's (the host's
// table of messages is k_status_bits in backends/vulkan/vulkan_backend.cpp; keep the two in sync).
#define ERR_GET_ROWS_BACK_ID 128u
#define ERR_CROSS_ENTROPY_ID 256u
#define ERR_ATTN_BACK_TREE 512u
#define ERR_ATTN_BACK_RANGE 1024u
