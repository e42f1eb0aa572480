from cpubuild.features import ARCHES, known_features


def test_every_arch_has_a_vocabulary():
    for arch in ARCHES:
        names = known_features(arch)
        assert names, arch
        assert len(set(names)) == len(names)
