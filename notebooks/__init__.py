"""The numbered report notebooks; shipped inside the package as ``fusionkit.notebooks`` so an installed fusionkit finds them."""
