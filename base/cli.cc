#include "base/cli.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"
#include "base/strings.h"

namespace qaqkv::base {
namespace {

// "--data_dir=x" -> "--data-dir=x"; other arguments unchanged.
std::string Dashed(std::string arg) {
  if (arg.rfind("--", 0) != 0) return arg;
  const size_t end = std::min(arg.find('='), arg.size());
  for (size_t i = 2; i < end; ++i) {
    if (arg[i] == '_') arg[i] = '-';
  }
  return arg;
}

absl::Status ReadConfig(const std::string& path, std::vector<std::string>* out) {
  std::error_code ec;
  if (path.empty() || std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("--config: \"", path, "\" is not a file"));
  }
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--config: cannot read ", path, ": ", std::strerror(errno)));
  }
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    const absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l[0] == '#') continue;
    const std::string where = absl::StrCat("--config: ", path, ":", line_no, ": ");
    // Every line must be one flag; anything else would be taken as a
    // positional argument.
    std::string flag = Dashed(std::string(l));
    if (flag.rfind("--", 0) != 0 || flag.size() == 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "want one --name=value per line, got \"", l, "\""));
    }
    if (flag == "--config" || flag.rfind("--config=", 0) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, "a config file cannot include another"));
    }
    out->push_back(std::move(flag));
  }
  return absl::OkStatus();
}

std::string Invalid(const std::string& value, std::string_view want) {
  return absl::StrCat("\"", value, "\" is not valid: want ", AsAbsl(want));
}

// The flag an unexpected argument names: "--memory-byte=1" -> "--memory-byte".
std::string FlagOf(const std::string& arg) { return arg.substr(0, arg.find('=')); }

}  // namespace

absl::StatusOr<std::vector<std::string>> ExpandArgs(int argc, const char* const* argv) {
  std::vector<std::string> out;
  if (argc > 0) out.emplace_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    std::string arg = Dashed(argv[i]);
    if (arg == "--") {  // the rest are positional, taken as they are
      for (; i < argc; ++i) out.emplace_back(argv[i]);
      break;
    }
    if (arg == "--config") {
      if (i + 1 >= argc) return absl::InvalidArgumentError("--config: missing the file's path");
      QAQKV_RETURN_IF_ERROR(ReadConfig(argv[++i], &out));
    } else if (arg.rfind("--config=", 0) == 0) {
      QAQKV_RETURN_IF_ERROR(ReadConfig(arg.substr(9), &out));
    } else {
      out.push_back(std::move(arg));
    }
  }
  return out;
}

std::optional<uint64_t> ParseByteSize(std::string_view text) {
  std::string t = absl::AsciiStrToLower(AsAbsl(text));
  uint64_t mult = 1;
  for (const auto& [suffix, m] :
       {std::pair<std::string_view, uint64_t>{"kib", 1ull << 10}, {"mib", 1ull << 20},
        {"gib", 1ull << 30}, {"tib", 1ull << 40}, {"k", 1ull << 10}, {"m", 1ull << 20},
        {"g", 1ull << 30}, {"t", 1ull << 40}}) {
    if (t.size() > suffix.size() && t.compare(t.size() - suffix.size(), suffix.size(),
                                              suffix.data(), suffix.size()) == 0) {
      t.resize(t.size() - suffix.size());
      mult = m;
      break;
    }
  }
  uint64_t v = 0;
  if (!absl::SimpleAtoi(t, &v) || (v != 0 && mult > UINT64_MAX / v)) return std::nullopt;
  return v * mult;
}

CLI::Validator ByteSize() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        return ParseByteSize(v) ? std::string() : Invalid(v, "a size like 1GiB, 512MiB or 4096");
      },
      "SIZE");
}

CLI::Validator Duration() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        absl::Duration d;
        return absl::ParseDuration(v, &d) ? std::string()
                                          : Invalid(v, "a duration like 20s, 1m or 500ms");
      },
      "DURATION");
}

CLI::Validator WholeNumber() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        int64_t n = 0;
        return absl::SimpleAtoi(v, &n) ? std::string() : Invalid(v, "a whole number");
      },
      "INT");
}

CLI::Validator TrueFalse() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        const std::string l = absl::AsciiStrToLower(v);
        for (const char* ok : {"true", "false", "1", "0", "yes", "no", "on", "off"}) {
          if (l == ok) return std::string();
        }
        return Invalid(v, "true or false");
      },
      "BOOL");
}

std::optional<int> ParseArgs(CLI::App& app, const std::vector<std::string>& args,
                             std::string* error) {
  std::vector<const char*> argv;
  argv.reserve(args.size());
  for (const std::string& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
    return std::nullopt;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ExtrasError&) {
    // CLI11 says "The following argument was not expected"; name the flag.
    const std::vector<std::string> extras = app.remaining(/*recurse=*/true);
    *error = absl::StrCat(extras.empty() ? "argument" : FlagOf(extras.front()),
                          ": unknown flag or argument (", app.get_name(), " --help lists them)");
    return 2;
  } catch (const CLI::ParseError& e) {
    *error = e.what();
    return 2;
  }
}

}  // namespace qaqkv::base
