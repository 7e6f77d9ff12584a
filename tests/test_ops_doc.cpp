// docs/ops.md's table of ops is the registry as built: every op has one row,
// every row is an op, and each row says what the definition does (backward,
// attribute struct, saved inputs and outputs, kind). The page drifted once;
// this keeps it true.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "ops/registry.h"

using namespace remat;

namespace {

struct Row {
  std::string backward, attributes, saves_inputs, saves_outputs, kind;
};

constexpr size_t kColumns = 6;

std::string trim(const std::string& s) {
  const size_t first = s.find_first_not_of(' ');
  if (first == std::string::npos) return {};
  return s.substr(first, s.find_last_not_of(' ') - first + 1);
}

// The rows of the first table whose header starts with "| op |".
std::map<std::string, Row> read_table(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::map<std::string, Row> rows;
  std::string line;
  bool in_table = false;
  while (std::getline(in, line)) {
    if (line.starts_with("| op |")) {
      in_table = true;
      continue;
    }
    if (!in_table) continue;
    if (!line.starts_with("|")) break;
    if (line.starts_with("| ---")) continue;
    std::vector<std::string> cells;
    std::stringstream cells_in(line.substr(1));
    for (std::string cell; std::getline(cells_in, cell, '|');) cells.push_back(trim(cell));
    EXPECT_EQ(cells.size(), kColumns) << line;
    if (cells.size() != kColumns) continue;
    EXPECT_TRUE(
        rows.emplace(cells[0], Row{cells[1], cells[2], cells[3], cells[4], cells[5]}).second)
        << "two rows for " << cells[0];
  }
  return rows;
}

std::string indices(const std::vector<int>& saved) {
  return saved.empty() ? "-" : fmt::format("{}", fmt::join(saved, ", "));
}

// What the row of `def` must say.
Row describe(const ops::OpDef& def) {
  const bool writes_operands = def.visible_outputs == 0;  // updates its operands in place
  Row row;
  row.backward = def.backward ? "yes" : writes_operands ? "none (optimizer step)" : "internal";
  row.attributes = def.attrs ? fmt::format("`{}`", def.attrs->name) : "-";
  row.saves_inputs = indices(def.save_inputs);
  row.saves_outputs = indices(def.save_outputs);
  row.kind = def.view ? "view" : def.random_count ? "random" : writes_operands ? "in place" : "";
  return row;
}

}  // namespace

TEST(OpsDoc, TableMatchesTheRegistry) {
  std::map<std::string, Row> rows = read_table(REMAT_SOURCE_DIR "/docs/ops.md");
  ASSERT_FALSE(rows.empty());
  for (const ops::OpDef* def : ops::Registry::instance().all()) {
    auto it = rows.find(def->name);
    if (it == rows.end()) {
      ADD_FAILURE() << "docs/ops.md has no row for op '" << def->name << "'";
      continue;
    }
    const Row want = describe(*def);
    const Row& got = it->second;
    const std::string want_line =
        fmt::format("| {} | {} | {} | {} | {} | {} |", def->name, want.backward, want.attributes,
                    want.saves_inputs, want.saves_outputs, want.kind);
    EXPECT_EQ(got.backward, want.backward) << want_line;
    EXPECT_EQ(got.attributes, want.attributes) << want_line;
    EXPECT_EQ(got.saves_inputs, want.saves_inputs) << def->name;
    EXPECT_EQ(got.saves_outputs, want.saves_outputs) << def->name;
    EXPECT_EQ(got.kind, want.kind) << def->name;
    rows.erase(it);
  }
  for (const auto& [name, row] : rows) {
    ADD_FAILURE() << "docs/ops.md lists '" << name << "', which the registry does not have";
  }
}
