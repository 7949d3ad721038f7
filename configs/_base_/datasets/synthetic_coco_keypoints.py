# The synthetic keypoint dataset (tools/generate_synthetic_coco.py
# data/synthetic_coco_keypoints --preset keypoints: several overlapping
# persons, hidden joints, crowds, large and border-cut persons) in the same
# layout as real COCO. Everything is COCO's (coco_keypoints.py) except the
# root and the person boxes: validation crops the ground-truth boxes
# (`bbox_file=None`), as there is no person detector to read results from.
#
# Selected by DYNCONV_MM_DATA=synthetic_coco (see coco_keypoints.py).
_base_ = './coco_keypoints.py'
data_root = 'data/synthetic_coco_keypoints/'

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root, bbox_file=None))
test_dataloader = val_dataloader
val_evaluator = dict(
    ann_file=data_root + 'annotations/person_keypoints_val2017.json')
test_evaluator = val_evaluator
