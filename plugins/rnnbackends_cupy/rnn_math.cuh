// g and g' shared by the kernels, written in terms of A = g(Z) as the NumPy reference does.
#pragma once
#include "cuda_compat.cuh"

template <typename T>
__device__ __forceinline__ T activate(T z, int relu) {  // g(Z): tanh, or relu = max(Z, 0)
    return relu ? (z > T(0) ? z : T(0)) : tanh(z);
}

template <typename T>
__device__ __forceinline__ T activation_grad(T a, int relu) {  // g'(Z) from A = g(Z)
    return relu ? (a > T(0) ? T(1) : T(0)) : T(1) - a * a;
}

template <typename T>
__device__ __forceinline__ T sigmoid(T z) {  // σ(Z) = 1 / (1 + e^-Z)
    return T(1) / (T(1) + exp(-z));
}
