// Runs darknet_src's batch-norm kernels (layers/batchnorm_kernels.cuh) on
// the CPU through cuda_emu.hpp, as batchnorm.cu launches them:
//   batchnorm_driver DIR B F S THREADS
// reads DIR/{x,delta,scales,biases}.bin (float32), writes DIR/{y, dx,
// rolling_mean, rolling_variance, bias_grads, scale_grads, y_inference}.bin.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cuda_emu.hpp"
#include "float_files.hpp"
#include "layers/batchnorm_kernels.cuh"

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s DIR B F S THREADS\n", argv[0]);
        return 2;
    }
    std::string dir = argv[1];
    int B = atoi(argv[2]), F = atoi(argv[3]), S = atoi(argv[4]);
    unsigned threads = (unsigned)atoi(argv[5]);
    size_t n = (size_t)B * F * S;
    std::vector<float> out = read_floats(dir + "/x.bin", n), delta = read_floats(dir + "/delta.bin", n);
    std::vector<float> scales = read_floats(dir + "/scales.bin", F), biases = read_floats(dir + "/biases.bin", F);
    std::vector<float> x_cache(n), x_norm(n), mean(F), variance(F), rolling_mean(F, 0.f), rolling_variance(F, 1.f);
    std::vector<float> partials(3 * (size_t)F * DN_BN_MAX_PARTS), bias_grads(F, 0.f), scale_grads(F, 0.f);
    std::vector<float> mean_delta(F), variance_delta(F), factors(2 * (size_t)F);
    std::vector<float> inference = out;

    // the launches of dn_batchnorm_forward_gpu (training) and dn_batchnorm_backward_gpu
    dim3 reduce = channel_grid(F, S, DN_BN_MAX_PARTS), rows = channel_grid(F, S, BN_MAX_ROW_BLOCKS);
    dim3 per_channel((unsigned)(F + 255) / 256);
    int parts = bn_parts(F, S);
    float *partial_sums = partials.data(), *partial_squares = partials.data() + (size_t)F * parts;
    launch(reduce, threads, [&] { bn_partial_sums_kernel(out.data(), B, F, S, partial_sums); });
    launch(reduce, threads, [&] { bn_partial_squares_kernel(out.data(), partial_sums, B, F, S, partial_squares); });
    launch(per_channel, 256, [&] {
        bn_statistics_kernel(partial_sums, partial_squares, parts, B, F, S, mean.data(), variance.data(),
                             rolling_mean.data(), rolling_variance.data());
    });
    launch(rows, threads, [&] {
        bn_normalize_kernel(out.data(), x_cache.data(), x_norm.data(), mean.data(), variance.data(),
                            scales.data(), biases.data(), B, F, S);
    });
    launch(reduce, threads, [&] {
        bn_backward_partials_kernel(delta.data(), x_cache.data(), x_norm.data(), mean.data(), B, F, S,
                                    partials.data());
    });
    launch(per_channel, 256, [&] {
        bn_backward_statistics_kernel(partials.data(), parts, F, variance.data(), scales.data(), bias_grads.data(),
                                      scale_grads.data(), mean_delta.data(), variance_delta.data());
    });
    launch(rows, threads, [&] {
        bn_backward_apply_kernel(delta.data(), x_cache.data(), mean.data(), variance.data(), scales.data(),
                                 mean_delta.data(), variance_delta.data(), B, F, S);
    });
    // inference with the rolling statistics just updated
    launch(per_channel, 256, [&] {
        bn_factors_kernel(rolling_mean.data(), rolling_variance.data(), scales.data(), biases.data(), F,
                          factors.data());
    });
    launch(rows, threads, [&] { bn_apply_kernel(inference.data(), factors.data(), B, F, S); });

    write_floats(dir + "/y.bin", out);
    write_floats(dir + "/dx.bin", delta);
    write_floats(dir + "/rolling_mean.bin", rolling_mean);
    write_floats(dir + "/rolling_variance.bin", rolling_variance);
    write_floats(dir + "/bias_grads.bin", bias_grads);
    write_floats(dir + "/scale_grads.bin", scale_grads);
    write_floats(dir + "/y_inference.bin", inference);
    printf("%d %u %u\n", parts, reduce.x, reduce.y);
    return 0;
}
