// Flags and values the benchmark binaries share, parsed one way.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "common/workload.h"

namespace bench {

// --model, --width, --heads, --activation and --image into config (each
// binary adds --depth, --batch and --seq its own way: lists or single values).
void add_model_flags(CLI::App& app, ModelConfig& config);

// "cpu" or "cuda" (cuda:0); throws remat::Error naming --device otherwise.
remat::Device parse_device(const std::string& name);
// "float32" or "bfloat16"; throws remat::Error naming --dtype otherwise.
remat::DType parse_dtype(const std::string& name);
// "a,b,c" -> {"a", "b", "c"}
std::vector<std::string> split_list(const std::string& list);

inline double mib(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

}  // namespace bench
