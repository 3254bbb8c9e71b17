"""Element symbols <-> atomic numbers (no dependency needed for a fixed table)."""

from __future__ import annotations

# Index = atomic number; index 0 is a placeholder.
SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
    "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf "
    "Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()

ATOMIC_NUMBERS = {symbol: z for z, symbol in enumerate(SYMBOLS) if z > 0}


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol (case-insensitive: 'cl', 'CL' and 'Cl' all give 17)."""
    key = symbol.strip().capitalize()
    if key not in ATOMIC_NUMBERS:
        raise KeyError(symbol)
    return ATOMIC_NUMBERS[key]


def symbol(z: int) -> str:
    """Element symbol of atomic number ``z``."""
    return SYMBOLS[int(z)] if 0 < int(z) < len(SYMBOLS) else f"Z{int(z)}"
