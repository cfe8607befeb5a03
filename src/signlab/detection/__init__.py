"""Detection: finding and naming traffic signs in whole road scenes (GTSDB), beside the crop classifier."""
