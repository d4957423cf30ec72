// float32 files for the emulation drivers (numpy's tofile / fromfile).
#ifndef DN_FLOAT_FILES_HPP
#define DN_FLOAT_FILES_HPP

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

inline std::vector<float> read_floats(const std::string &path, size_t n)
{
    std::vector<float> v(n);
    FILE *f = fopen(path.c_str(), "rb");
    if (!f || fread(v.data(), sizeof(float), n, f) != n) {
        fprintf(stderr, "cannot read %zu floats from %s\n", n, path.c_str());
        exit(2);
    }
    fclose(f);
    return v;
}

inline void write_floats(const std::string &path, const std::vector<float> &v)
{
    FILE *f = fopen(path.c_str(), "wb");
    if (!f || fwrite(v.data(), sizeof(float), v.size(), f) != v.size()) {
        fprintf(stderr, "cannot write %s\n", path.c_str());
        exit(2);
    }
    fclose(f);
}

#endif
