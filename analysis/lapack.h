#pragma once
/// \file lapack.h
/// The BLAS/LAPACK routines the exact float64 spectra call directly (spectrum.cpp; its tests and rala_bench_rank use the
/// same declarations). Fortran ABI: every argument by pointer, matrices column-major, and the trailing size_t
/// arguments are gfortran's hidden lengths of the CHARACTER arguments. Debian resolves them to OpenBLAS at run time.

#include <cstddef>

extern "C" {
void dgeqrf_(const int* m, const int* n, double* a, const int* lda, double* tau, double* work, const int* lwork,
             int* info);
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s, double* u,
             const int* ldu, double* vt, const int* ldvt, double* work, const int* lwork, int* iwork, int* info,
             size_t jobz_len);
/// Reference implementations the tests and benchmarks compare against (the Gram spectra run gram_kernels.h and
/// tridiagonal.h instead).
void dsyrk_(const char* uplo, const char* trans, const int* n, const int* k, const double* alpha, const double* a,
            const int* lda, const double* beta, double* c, const int* ldc, size_t uplo_len, size_t trans_len);
void dsytrd_(const char* uplo, const int* n, double* a, const int* lda, double* d, double* e, double* tau, double* work,
             const int* lwork, int* info, size_t uplo_len);
void dsterf_(const int* n, double* d, double* e, int* info);
void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w, double* work,
             const int* lwork, int* iwork, const int* liwork, int* info, size_t jobz_len, size_t uplo_len);
}
