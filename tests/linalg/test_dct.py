"""The DCT basis and its FFT evaluation against scipy's orthonormal DCT-II and the matrix product."""

from __future__ import annotations

import pytest
import scipy.fft
import torch

from precond.linalg import dct_basis, dct_rows


@pytest.mark.parametrize("n", [1, 2, 7, 16, 33])
def test_basis_is_orthogonal_and_is_scipy_dct_ii(n: int) -> None:
    q = dct_basis(n, torch.float64)
    torch.testing.assert_close(q.T @ q, torch.eye(n, dtype=torch.float64), atol=1e-13, rtol=0)
    x = torch.randn(5, n, dtype=torch.float64)
    expected = torch.from_numpy(scipy.fft.dct(x.numpy(), type=2, norm="ortho", axis=-1))
    torch.testing.assert_close(x @ q, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("n", [1, 2, 5, 8, 31])
def test_fft_dct_equals_the_matrix_product(n: int, dtype: torch.dtype) -> None:
    x = torch.randn(3, 4, n, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(dct_rows(x), x @ dct_basis(n, dtype), atol=tol, rtol=tol)


def test_one_cached_matrix_per_size() -> None:
    assert dct_basis(6) is dct_basis(6)
    assert dct_basis(6).shape == (6, 6) and dct_basis(9).shape == (9, 9)
    assert dct_basis(6, torch.float64).dtype == torch.float64


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="size"):
        dct_basis(0)
    with pytest.raises(ValueError, match="last dim"):
        dct_rows(torch.zeros(3, 0))
