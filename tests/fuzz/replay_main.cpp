/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The main() of a fuzz target built without libFuzzer (any compiler, -Dfuzz=disabled): it runs
 * the target once on every file named, or found in a directory named, on the command line, so
 * the seed corpus is a regression test of every build. Exits 1 when there was no input.
 */
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

namespace {

bool runFile(const std::filesystem::path &path)
{
	std::ifstream in(path, std::ios::binary);
	if (!in) {
		std::fprintf(stderr, "cannot read %s\n", path.c_str());
		return false;
	}
	std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
				   std::istreambuf_iterator<char>());
	LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
	return true;
}

} /* namespace */

int main(int argc, char **argv)
{
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	std::vector<std::filesystem::path> inputs;
	for (int i = 1; i < argc; i++) {
		std::error_code ec;
		if (!std::filesystem::is_directory(argv[i], ec)) {
			inputs.emplace_back(argv[i]);
			continue;
		}
		for (const auto &entry : std::filesystem::directory_iterator(argv[i], ec))
			if (entry.is_regular_file(ec))
				inputs.push_back(entry.path());
	}
	std::sort(inputs.begin(), inputs.end());
	size_t ran = 0;
	for (const auto &path : inputs)
		ran += runFile(path) ? 1 : 0;
	std::printf("%s: replayed %zu inputs\n", argv[0], ran);
	return ran == 0 || ran != inputs.size() ? 1 : 0;
}
