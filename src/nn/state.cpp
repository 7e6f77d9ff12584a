// The safetensors format (see remat/nn/state.h). The checks on load follow the
// reference implementation's: known dtypes, sizes that agree with shapes, and
// data offsets that tile the data section exactly, without gap or overlap.
#include "remat/nn/state.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "remat/core/grad_mode.h"

namespace remat::nn {
namespace {

// Tensor bytes go to and from the file as they lie in memory.
static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; remat copies host bytes");

constexpr const char* kMetadataKey = "__metadata__";
constexpr size_t kHeaderAlignment = 8;

constexpr std::pair<DType, const char*> kDTypeCodes[] = {
    {kFloat32, "F32"}, {kFloat64, "F64"}, {kBFloat16, "BF16"},
    {kFloat16, "F16"}, {kInt64, "I64"},   {kInt32, "I32"},
    {kBool, "BOOL"},   {kInt8, "I8"},     {kFloat8E4M3, "F8_E4M3"}};

const char* dtype_code(DType dtype) {
  for (const auto& [d, code] : kDTypeCodes) {
    if (d == dtype) return code;
  }
  throw Error(fmt::format("safetensors: no code for dtype {}", dtype));
}

std::optional<DType> dtype_from_code(const std::string& code) {
  for (const auto& [d, c] : kDTypeCodes) {
    if (code == c) return d;
  }
  return std::nullopt;
}

// One tensor's entry in a header being read.
struct Entry {
  std::string name;
  DType dtype = kFloat32;
  Shape shape;
  int64_t begin = 0;
  int64_t end = 0;
};

// A non-negative JSON integer that fits int64_t.
std::optional<int64_t> as_size(const nlohmann::json& value) {
  if (!value.is_number_unsigned()) return std::nullopt;
  const auto v = value.get<uint64_t>();
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return static_cast<int64_t>(v);
}

Entry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& json) {
  auto fail = [&](const std::string& problem) {
    return Error(fmt::format("safetensors file {}: tensor '{}': {}", path, name, problem));
  };
  // What save_safetensors refuses to write, a load refuses to read.
  if (name.empty()) throw fail("a tensor name must not be empty");
  if (!json.is_object() || !json.contains("dtype") || !json.contains("shape") ||
      !json.contains("data_offsets")) {
    throw fail("expected an object with dtype, shape and data_offsets, got " + json.dump());
  }
  Entry entry{.name = name};
  const auto dtype =
      json["dtype"].is_string() ? dtype_from_code(json["dtype"].get<std::string>()) : std::nullopt;
  if (!dtype) throw fail("unsupported dtype " + json["dtype"].dump());
  entry.dtype = *dtype;

  const nlohmann::json& shape = json["shape"];
  if (!shape.is_array()) throw fail("shape must be an array, got " + shape.dump());
  // Overflow-checked: a corrupt shape must not wrap around to a small size.
  // The extent counts zero sizes as ones: a tensor's strides multiply up to
  // it even when it holds no element.
  int64_t nbytes = static_cast<int64_t>(element_size(entry.dtype));
  int64_t extent = nbytes;
  for (const auto& dim : shape) {
    const auto size = as_size(dim);
    if (!size || __builtin_mul_overflow(nbytes, *size, &nbytes) ||
        __builtin_mul_overflow(extent, std::max<int64_t>(*size, 1), &extent)) {
      throw fail("invalid shape " + shape.dump());
    }
    entry.shape.push_back(*size);
  }

  const nlohmann::json& offsets = json["data_offsets"];
  const auto begin = offsets.is_array() && offsets.size() == 2 ? as_size(offsets[0]) : std::nullopt;
  const auto end = offsets.is_array() && offsets.size() == 2 ? as_size(offsets[1]) : std::nullopt;
  if (!begin || !end || *begin > *end) {
    throw fail("data_offsets must be [begin, end] with 0 <= begin <= end, got " + offsets.dump());
  }
  if (*end - *begin != nbytes) {
    throw fail(fmt::format("data_offsets {} span {} bytes, but {} {} needs {}", offsets.dump(),
                           *end - *begin, shape_str(entry.shape), entry.dtype, nbytes));
  }
  entry.begin = *begin;
  entry.end = *end;
  return entry;
}

struct Header {
  std::vector<Entry> entries;  // sorted by data offset
  Metadata metadata;
};

// Parses the header, checking that its entries tile the `data_size` bytes
// after it exactly.
Header parse_header(const std::string& path, const std::string& text, int64_t data_size) {
  // Deeper nesting than a shape array's is refused while parsing: the error
  // messages print values with nlohmann's recursive dump(), which a deep
  // enough header would drive off the end of the stack.
  constexpr int kMaxDepth = 2;
  auto limit_depth = [&](int depth, nlohmann::json::parse_event_t event, const nlohmann::json&) {
    using Event = nlohmann::json::parse_event_t;
    REMAT_CHECK(depth <= kMaxDepth || (event != Event::object_start && event != Event::array_start),
                "safetensors file {}: header nests arrays or objects deeper than {} levels", path,
                kMaxDepth + 1);
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, limit_depth);
  } catch (const nlohmann::json::exception& e) {  // a syntax error, or a number beyond double
    throw Error(fmt::format("safetensors file {}: header is not valid JSON: {}", path, e.what()));
  }
  REMAT_CHECK(header.is_object(), "safetensors file {}: header must be a JSON object, got {}", path,
              header.type_name());

  Header parsed;
  std::vector<Entry>& entries = parsed.entries;
  for (const auto& [name, value] : header.items()) {
    if (name != kMetadataKey) {
      entries.push_back(parse_entry(path, name, value));
      continue;
    }
    REMAT_CHECK(value.is_object(), "safetensors file {}: {} must be an object of strings", path,
                kMetadataKey);
    for (const auto& [key, text_value] : value.items()) {
      REMAT_CHECK(text_value.is_string(), "safetensors file {}: {} value of '{}' is not a string",
                  path, kMetadataKey, key);
      parsed.metadata[key] = text_value.get<std::string>();
    }
  }

  // By (begin, end): an empty tensor sits before a non-empty one at its offset.
  // Stable, so tensors at the same offsets stay in name order, as the JSON object lists them.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::pair{a.begin, a.end} < std::pair{b.begin, b.end};
  });
  int64_t expected_begin = 0;
  for (const Entry& e : entries) {
    REMAT_CHECK(e.end <= data_size,
                "safetensors file {}: tensor '{}' has data_offsets [{}, {}] beyond the {} bytes "
                "of data (truncated file?)",
                path, e.name, e.begin, e.end, data_size);
    REMAT_CHECK(e.begin == expected_begin,
                "safetensors file {}: tensor '{}' starts at data offset {}, expected {} ({})", path,
                e.name, e.begin, expected_begin,
                e.begin < expected_begin ? "it overlaps the tensor before" : "a gap precedes it");
    expected_begin = e.end;
  }
  REMAT_CHECK(expected_begin == data_size,
              "safetensors file {}: the tensors hold {} bytes of data, but {} follow the header",
              path, expected_begin, data_size);
  return parsed;
}

// Writes to a sibling file and renames it over `path`: a save that fails
// midway leaves an earlier file at `path` intact.
void write_atomically(const std::string& path, const std::function<void(std::ofstream&)>& write) {
  const std::string partial = path + ".partial";
  try {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    REMAT_CHECK(out.is_open(), "save_safetensors: cannot open {} for writing", partial);
    write(out);
    out.close();
    REMAT_CHECK(!out.fail(), "save_safetensors: writing {} failed", partial);
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(partial, ignored);
    throw;
  }
  std::error_code ec;
  std::filesystem::rename(partial, path, ec);
  REMAT_CHECK(!ec, "save_safetensors: cannot rename {} to {}: {}", partial, path, ec.message());
}

}  // namespace

void save_safetensors(const NamedTensors& tensors, const std::string& path,
                      const Metadata& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    REMAT_CHECK(!name.empty() && name != kMetadataKey && !header.contains(name),
                "save_safetensors({}): tensor names must be unique, non-empty and not {}; got "
                "'{}'",
                path, kMetadataKey, name);
    REMAT_CHECK(t.defined(), "save_safetensors({}): tensor '{}' is undefined", path, name);
    header[name] = {{"dtype", dtype_code(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump();
  text.append((kHeaderAlignment - text.size() % kHeaderAlignment) % kHeaderAlignment, ' ');

  write_atomically(path, [&](std::ofstream& out) {
    const uint64_t length = text.size();
    char length_bytes[sizeof(length)];
    std::memcpy(length_bytes, &length, sizeof(length));
    out.write(length_bytes, sizeof(length_bytes));
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    // One tensor on the host at a time: saving a GPU model needs no second copy of it.
    NoGradGuard no_grad;
    for (const auto& [name, t] : tensors) {
      const Tensor host = t.to(kCPU).contiguous();
      out.write(static_cast<const char*>(host.data_ptr()), host.nbytes());
    }
  });
}

NamedTensors load_safetensors(const std::string& path, Metadata* metadata) {
  std::ifstream in(path, std::ios::binary);
  REMAT_CHECK(in.is_open(), "load_safetensors: cannot open {}", path);
  std::error_code ec;
  const auto file_size = static_cast<int64_t>(std::filesystem::file_size(path, ec));
  REMAT_CHECK(!ec, "load_safetensors: cannot read the size of {}: {}", path, ec.message());
  REMAT_CHECK(file_size >= 8,
              "safetensors file {}: truncated: {} bytes, fewer than the 8-byte header length", path,
              file_size);

  char length_bytes[8];
  in.read(length_bytes, sizeof(length_bytes));
  uint64_t header_length = 0;
  std::memcpy(&header_length, length_bytes, sizeof(header_length));
  REMAT_CHECK(header_length <= static_cast<uint64_t>(file_size - 8),
              "safetensors file {}: header length {} is larger than the {} bytes that follow it",
              path, header_length, file_size - 8);
  std::string text(header_length, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_length));
  const int64_t data_start = 8 + static_cast<int64_t>(header_length);
  Header header = parse_header(path, text, file_size - data_start);

  NamedTensors tensors;
  for (const Entry& e : header.entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype, kCPU);
    in.seekg(data_start + e.begin);
    in.read(static_cast<char*>(t.data_ptr()), e.end - e.begin);
    REMAT_CHECK(in.good(), "safetensors file {}: reading tensor '{}' failed", path, e.name);
    tensors.emplace_back(e.name, std::move(t));
  }
  if (metadata != nullptr) *metadata = std::move(header.metadata);
  return tensors;
}

void save_state(const Module& module, const std::string& path) {
  save_safetensors(module.state_dict(), path);
}

void load_state(Module& module, const std::string& path) {
  const NamedTensors saved = load_safetensors(path);
  const std::unordered_map<std::string, Tensor> saved_by_name(saved.begin(), saved.end());
  NamedTensors state = module.state_dict();

  // Every problem at once, and nothing copied unless all is well.
  std::vector<std::string> problems;
  std::unordered_set<std::string> expected;
  for (const auto& [name, t] : state) {
    expected.insert(name);
    const auto found = saved_by_name.find(name);
    if (found == saved_by_name.end()) {
      problems.push_back(fmt::format("missing key '{}'", name));
    } else if (found->second.shape() != t.shape() || found->second.dtype() != t.dtype()) {
      problems.push_back(fmt::format("'{}' is {} {} in the file, {} {} in the module", name,
                                     shape_str(found->second.shape()), found->second.dtype(),
                                     shape_str(t.shape()), t.dtype()));
    }
  }
  for (const auto& [name, t] : saved) {
    if (!expected.contains(name)) problems.push_back(fmt::format("unexpected key '{}'", name));
  }
  REMAT_CHECK(problems.empty(), "load_state: {} does not match the {}: {}", path,
              module.type_name(), fmt::join(problems, "; "));

  NoGradGuard no_grad;
  for (auto& [name, t] : state) t.copy_(saved_by_name.at(name).to(t.device()));
}

}  // namespace remat::nn
